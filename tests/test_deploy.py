"""deploy/: images in sync with the install steps, manifests valid against their schemas, the rehearsal.

Core Kubernetes kinds are validated (strictly: unknown fields fail) against the Kubernetes JSON schemas
of ``kubernetes-validate``; custom resources against their CRDs' own ``openAPIV3Schema`` with
``jsonschema`` (the dask-kubernetes CRDs from the installed package, KubeRay's RayJob CRD vendored in
deploy/crds/), with unknown fields failing too (the API server would silently prune them), and the pod
specs embedded in them against the core PodSpec schema.  The rehearsal (deploy/rehearse.sh) runs as the
last test: it needs root and ``ip netns``.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.37.0"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")

sys.path.insert(0, str(DEPLOY))
import podcmd  # noqa: E402


def load_all(path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=_Loader) if d]


def manifests() -> list[tuple[str, dict]]:
    out = []
    for p in sorted(K8S.glob("*.yaml")):
        if p.name.endswith("-values.yaml"):
            continue
        out += [(p.name, d) for d in load_all(p)]
    return out


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


def one(kind: str) -> dict:
    docs = by_kind(kind)
    assert len(docs) == 1, kind
    return docs[0]


def base_job_template() -> dict:
    return json.loads((K8S / "base-job-template.json").read_text())


def k8s_validate(doc: dict) -> None:
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:  # pragma: no cover - the message says what is wrong
        raise AssertionError(f"{doc['kind']}/{doc.get('metadata', {}).get('name')}: {exc}") from None


def as_pod(spec: dict, name: str = "check") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


# ------------------------------------------------------------------------------------------------
# images: the Makefile's install steps
# ------------------------------------------------------------------------------------------------

_VALUE_FLAGS = {"--index-url", "--extra-index-url", "-i", "--find-links", "-f", "-c", "--constraint"}


def pip_targets(line: str) -> list[str]:
    """What one ``pip install`` line installs: its targets (``-e`` kept), flags and index options dropped."""
    toks = shlex.split(line.replace("$(PY)", "python"))
    toks = toks[toks.index("install") + 1:]
    out, skip = [], False
    for i, t in enumerate(toks):
        if skip:
            skip = False
        elif t in _VALUE_FLAGS:
            skip = True
        elif t == "-e":
            out.append("-e " + toks[i + 1])
            skip = True
        elif not t.startswith("-"):
            out.append(t)
    return out


def makefile_steps() -> list[list[str]]:
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):.*?\n((?:\t.*\n)+)", text, re.M).group(1)
    return [pip_targets(ln) for ln in recipe.splitlines() if "pip install" in ln]


def dockerfile_steps(name: str) -> list[list[str]]:
    lines = (DEPLOY / name).read_text().splitlines()
    return [pip_targets(ln.split("RUN", 1)[1]) for ln in lines if ln.startswith("RUN") and "pip install" in ln]


def test_makefile_install_steps_found():
    steps = makefile_steps()
    assert steps[0] == ["pip"] and ["-e .[all]"] in steps and any(s[0].startswith("torch==") for s in steps)


def test_cpu_dockerfile_runs_the_makefile_install_steps():
    assert dockerfile_steps("Dockerfile") == makefile_steps()
    # only the index of the CPU torch wheel differs
    assert "download.pytorch.org/whl/cpu" in (DEPLOY / "Dockerfile").read_text()


def test_cuda_dockerfile_runs_the_makefile_steps_plus_the_gpu_extra():
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[gpu]'" in readme  # the README's GPU install step
    assert dockerfile_steps("Dockerfile.cuda") == makefile_steps() + [["-e .[gpu]"]]


def test_dockerfiles_copy_what_the_install_needs():
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / name).read_text()
        for path in ("pyproject.toml", "kmeans_dist", "pipelines", "flows"):
            assert re.search(rf"^COPY {re.escape(path)}\b", text, re.M), (name, path)
        assert "WORKDIR /opt/kmeans-dist" in text  # where deploy/prefect.yaml's pull step goes


# ------------------------------------------------------------------------------------------------
# core kinds against the Kubernetes schemas
# ------------------------------------------------------------------------------------------------

CORE = {"Namespace", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}


def test_every_manifest_is_a_known_kind():
    kinds = {d["kind"] for _, d in manifests()}
    assert kinds == CORE | {"DaskCluster", "DaskAutoscaler", "RayJob"}
    for _, d in manifests():
        assert d["metadata"].get("namespace", "kmeans") == "kmeans", d["metadata"]


@pytest.mark.parametrize("name,doc", [m for m in manifests() if m[1]["kind"] in CORE],
                         ids=lambda v: v if isinstance(v, str) else f"{v['kind']}-{v['metadata']['name']}")
def test_core_kind_is_valid(name, doc):
    k8s_validate(doc)


def test_schema_validation_catches_mistakes():
    dep = copy.deepcopy(one("Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy "] = "Always"  # a typo
    with pytest.raises(AssertionError):
        k8s_validate(dep)


def test_rbac_lets_the_worker_run_jobs_and_nothing_more():
    role, binding = one("Role"), one("RoleBinding")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}
    assert {"create", "delete", "watch"} <= rules[("batch", "jobs")]
    assert {"get", "watch", "list"} == rules[("", "pods")] == rules[("", "pods/log")]
    assert all("*" not in v for v in rules.values()) and ("", "secrets") not in rules
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    sas = {d["metadata"]["name"] for d in by_kind("ServiceAccount")}
    assert {s["name"] for s in binding["subjects"]} <= sas


# ------------------------------------------------------------------------------------------------
# custom resources against their CRDs
# ------------------------------------------------------------------------------------------------

def strict(schema):
    """The CRD schema with unknown fields rejected where the API server would prune them."""
    if isinstance(schema, dict):
        s = {k: strict(v) for k, v in schema.items()}
        if ("properties" in s and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        return s
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(crd: dict, version: str) -> dict:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return strict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{crd['metadata']['name']} has no version {version}")


def dask_crd(kind: str) -> dict:
    crds = resources.files("dask_kubernetes") / "operator/deployment/helm/dask-kubernetes-operator/crds"
    with resources.as_file(crds / f"{kind.lower()}.yaml") as p:
        crd = load_all(p)[0]
    assert crd["spec"]["names"]["kind"] == kind
    return crd


def rayjob_crd() -> dict:
    crd = load_all(DEPLOY / "crds" / "ray.io_rayjobs.yaml")[0]
    assert crd["spec"]["names"]["kind"] == "RayJob"
    return crd


def check_cr(doc: dict, crd: dict) -> None:
    group, version = doc["apiVersion"].split("/")
    assert group == crd["spec"]["group"] and doc["kind"] == crd["spec"]["names"]["kind"]
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft7Validator(crd_schema(crd, version)).validate(body)


def test_daskcluster_matches_the_operator_crd():
    dc = one("DaskCluster")
    check_cr(dc, dask_crd("DaskCluster"))
    for role in ("scheduler", "worker"):
        k8s_validate(as_pod(dc["spec"][role]["spec"], f"dask-{role}"))
    k8s_validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kmeans-scheduler"},
                  "spec": dc["spec"]["scheduler"]["service"]})


def test_daskautoscaler_matches_the_operator_crd():
    da = one("DaskAutoscaler")
    check_cr(da, dask_crd("DaskAutoscaler"))
    assert da["spec"]["cluster"] == one("DaskCluster")["metadata"]["name"]
    assert 1 <= da["spec"]["minimum"] <= da["spec"]["maximum"]


def test_rayjob_matches_the_kuberay_crd():
    rj = one("RayJob")
    check_cr(rj, rayjob_crd())
    assert rj["spec"]["shutdownAfterJobFinishes"] is True
    spec = rj["spec"]["rayClusterSpec"]
    k8s_validate(as_pod(spec["headGroupSpec"]["template"]["spec"], "ray-head"))
    for g in spec["workerGroupSpecs"]:
        k8s_validate(as_pod(g["template"]["spec"], f"ray-{g['groupName']}"))


def test_crd_validation_catches_mistakes():
    dc = copy.deepcopy(one("DaskCluster"))
    dc["spec"]["worker"]["replica"] = 3  # typo of replicas: the API server would drop it
    with pytest.raises(jsonschema.ValidationError):
        check_cr(dc, dask_crd("DaskCluster"))
    rj = copy.deepcopy(one("RayJob"))
    rj["spec"]["shutdownAfterJobFinishes"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        check_cr(rj, rayjob_crd())


def test_vendored_rayjob_crd_names_its_source():
    note = (DEPLOY / "crds" / "README.md").read_text()
    assert "v1.7.0" in note and "59d663aeec13760646da3db9c1cf8cfe883e30b7" in note
    assert "ray-operator/config/crd/bases/ray.io_rayjobs.yaml" in note


def test_rayjob_entrypoint_is_the_deep_flows_cli(monkeypatch):
    import flows.deep

    entry = shlex.split(one("RayJob")["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "flows.deep"]
    seen = {}
    monkeypatch.setattr(flows.deep, "deep_clustering_flow", lambda **kw: seen.update(kw) or {})
    flows.deep.main(entry[3:])
    assert seen["num_workers"] == 2 and seen["source"].startswith("/data/")
    mounts = one("RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "data", "mountPath": "/data"} in mounts["volumeMounts"]


# ------------------------------------------------------------------------------------------------
# Dask over TLS: the same settings everywhere
# ------------------------------------------------------------------------------------------------

def container(kind_name: str, name: str, manifest: str = "dask-cluster.yaml") -> dict:
    return podcmd.find_container(load_all(K8S / manifest), kind_name, name)


def test_dask_commands_use_tls_and_bind_the_pod_ip():
    sched, env_s = podcmd.resolve(container("DaskCluster/kmeans", "scheduler"), {"POD_IP": "10.0.0.2"})
    work, env_w = podcmd.resolve(container("DaskCluster/kmeans", "worker"),
                                 {"POD_IP": "10.0.0.3", "DASK_WORKER_NAME": "w"})
    assert sched[:2] == ["dask", "scheduler"] and work[:2] == ["dask", "worker"]
    for argv in (sched, work):
        assert argv[argv.index("--protocol") + 1] == "tls"
        assert argv[argv.index("--host") + 1].startswith("10.0.0.")
        assert argv[argv.index("--dashboard-address") + 1].startswith("10.0.0.")
    assert work[2] == env_w["DASK_SCHEDULER_TLS"] == \
        "tls://kmeans-scheduler.kmeans.svc.cluster.local:8786"
    for env, role in ((env_s, "SCHEDULER"), (env_w, "WORKER")):
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/etc/dask-tls/ca.crt"
        assert env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] == "/etc/dask-tls/tls.crt"
        assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == "/etc/dask-tls/tls.key"
    from kmeans_dist.chunked import MALLOC_ENV

    assert {k: env_w[k] for k in MALLOC_ENV} == MALLOC_ENV  # the worker processes' allocator thresholds


def test_podcmd_follows_the_kubelet_rules():
    c = {"args": ["run", "$(A)/x"], "env": [{"name": "A", "value": "/a"}, {"name": "B", "value": "$(A)/b"},
                                           {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
    argv, env = podcmd.resolve(c, {"P": "1.2.3.4"})
    assert argv == ["run", "/a/x"] and env == {"A": "/a", "B": "/a/b", "P": "1.2.3.4"}
    argv, env = podcmd.resolve(c, {"P": "1", "A": "/o"})
    assert env["B"] == "/o/b"
    with pytest.raises(SystemExit, match="--set P"):
        podcmd.resolve(c, {})
    with pytest.raises(SystemExit, match=r"\$\(Z\)"):
        podcmd.resolve({"args": ["$(Z)"]}, {})


def test_flow_run_pods_get_the_client_side_of_the_tls_settings():
    c = base_job_template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    dask_env = {k: v for k, v in env.items() if k.startswith("DASK_DISTRIBUTED__")}
    worker_env = podcmd.resolve(container("DaskCluster/kmeans", "worker"),
                                {"POD_IP": "x", "DASK_WORKER_NAME": "w"})[1]
    for k, v in dask_env.items():
        assert podcmd.expand(v, env, k) == worker_env.get(k, podcmd.expand(v, env, k))
    assert {"DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"} <= set(dask_env)
    # the rehearsal's Prefect worker (whose flow runs are the Dask clients) sets the same variables
    script = (DEPLOY / "rehearse.sh").read_text()
    block = script[script.index("start pworker"):script.index("prefect worker start")]
    assert set(re.findall(r"(DASK_DISTRIBUTED__\w+)=", block)) == set(dask_env)
    assert "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP=" + env["DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP"] in block


# ------------------------------------------------------------------------------------------------
# Prefect: work-pool template, helm values, deployments
# ------------------------------------------------------------------------------------------------

def render_job(job_variables: dict | None = None) -> dict:
    from prefect.utilities.templating import apply_values

    tpl = base_job_template()
    variables = tpl["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    values = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    values.update({"name": "kmeans-run", "labels": {"app": "kmeans"}, "command": "prefect flow-run execute",
                   "env": {"PREFECT_API_URL": "http://prefect-server:4200/api"}})
    values.update(job_variables or {})
    conf = apply_values(tpl["job_configuration"], values)
    job = conf["job_manifest"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    c["args"] = shlex.split(c["args"])  # as the Kubernetes worker does
    c["env"] = [{"name": k, "value": v} for k, v in conf["env"].items()] + c["env"]
    return job


def test_base_job_template_placeholders_are_declared_variables():
    tpl = base_job_template()
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    assert used <= set(tpl["variables"]["properties"])


def test_base_job_template_renders_a_valid_job():
    job = render_job()
    assert job["kind"] == "Job" and "{{" not in json.dumps(job)
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    k8s_validate(job)
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] in {d["metadata"]["name"] for d in by_kind("ServiceAccount")}
    claims = {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim")}
    assert {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v} <= claims


def test_helm_values_match_the_prefect_worker_chart_schema():
    values = load_all(K8S / "prefect-worker-values.yaml")[0]
    schema = json.loads((DEPLOY / "schemas" / "prefect-worker.values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    bad = copy.deepcopy(values)
    bad["worker"]["config"]["queryInterval"] = "often"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)
    assert values["serviceAccount"]["create"] is False
    assert values["serviceAccount"]["name"] == one("RoleBinding")["subjects"][0]["name"]
    assert values["role"]["create"] is False and values["rolebinding"]["create"] is False
    assert values["worker"]["config"]["type"] == "kubernetes"
    assert values["worker"]["config"]["jobNamespace"] == "kmeans"


def prefect_yaml() -> dict:
    return load_all(DEPLOY / "prefect.yaml")[0]


def test_prefect_yaml_deployments_use_the_manifests():
    import importlib

    from prefect import Flow

    tpl = base_job_template()
    job_vars_schema = copy.deepcopy(tpl["variables"])
    job_vars_schema["additionalProperties"] = False
    values = load_all(K8S / "prefect-worker-values.yaml")[0]
    dc = one("DaskCluster")
    port = dc["spec"]["scheduler"]["service"]["ports"][0]["port"]
    scheduler = f"tls://{dc['metadata']['name']}-scheduler.{dc['metadata']['namespace']}.svc.cluster.local:{port}"
    deps = {d["name"]: d for d in prefect_yaml()["deployments"]}
    assert {"clustering-k8s", "choose-k-k8s", "clustering-rehearsal"} <= set(deps)
    for name, d in deps.items():
        # a module entrypoint: the tasks' module must import on the Dask workers (not a file path)
        mod, _, attr = d["entrypoint"].partition(":")
        assert not mod.endswith(".py")
        fl = getattr(importlib.import_module(mod), attr)
        assert isinstance(fl, Flow)
        fl.validate_parameters(dict(d.get("parameters") or {}))
        if name.endswith("-k8s"):
            pool = d["work_pool"]
            assert pool["name"] == values["worker"]["config"]["workPool"]
            jsonschema.validate(pool["job_variables"], job_vars_schema)
            k8s_validate(dict(render_job(pool["job_variables"]), metadata={"name": "x", "namespace": "kmeans"}))
            assert d["parameters"]["dask_address"] == scheduler
            assert d["parameters"]["source"].startswith("/data/")
    assert prefect_yaml()["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == \
        "/opt/kmeans-dist"


# ------------------------------------------------------------------------------------------------
# the rehearsal
# ------------------------------------------------------------------------------------------------

def _netns_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "deploy/rehearse.sh needs root (it creates network namespaces)"
    for tool in ("ip", "ss", "openssl", "curl"):
        if shutil.which(tool) is None:
            return f"deploy/rehearse.sh needs {tool}, which is not installed"
    probe = f"kdprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def test_rehearse_script_is_strict_bash():
    text = (DEPLOY / "rehearse.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text and "trap cleanup EXIT" in text
    subprocess.run(["bash", "-n", str(DEPLOY / "rehearse.sh")], check=True)
    # no broad kills: processes are stopped by PID
    assert not re.search(r"\b(pkill|killall)\b", text)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_rehearsal():
    if os.environ.get("KMEANS_DIST_REHEARSAL") != "1":
        pytest.skip("the deployment rehearsal runs in `make rehearse` (which .ci/run calls after `make test`)")
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    r = subprocess.run(["bash", str(DEPLOY / "rehearse.sh")], cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                       timeout=1100)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines and lines[-1].startswith("REHEARSAL OK"), \
        f"rc={r.returncode}\n{r.stderr[-6000:]}\n{r.stdout[-2000:]}"
    last = lines[-1]
    for part in ("Dask over TLS", "completed, centers bit-identical", "Prefect server restarted",
                 "all on the namespaces' own addresses", "cleaned up"):
        assert part in last
    print(r.stderr[-3000:])
    print(last)
