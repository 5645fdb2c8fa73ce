"""Run a container of a Kubernetes manifest as a local process: its args with its env, as the kubelet would.

``python deploy/podcmd.py MANIFEST KIND/NAME CONTAINER [--set VAR=VALUE ...] [--print]``

The container's ``env`` is resolved in order, ``$(VAR)`` expanded from the variables before it (the
kubelet's rule); an entry with ``valueFrom`` (``status.podIP``, secrets) must be given with ``--set``,
which also replaces literal values.  ``$(VAR)`` in ``command``/``args`` is expanded the same way.  The
process replaces this one (``exec``), so a shell's ``$!`` is its PID.  ``deploy/rehearse.sh`` starts the
Dask scheduler, the Dask workers and the Prefect server this way, so the rehearsal runs the manifests'
own commands.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

import yaml

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def find_container(docs, ref: str, container: str) -> dict:
    """The container named ``container`` in the resource ``KIND/NAME`` of ``docs``."""
    kind, _, name = ref.partition("/")
    for doc in docs:
        if doc and doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            found = []

            def walk(node):
                if isinstance(node, dict):
                    for k, v in node.items():
                        if k in ("containers", "initContainers") and isinstance(v, list):
                            found.extend(c for c in v if isinstance(c, dict) and c.get("name") == container)
                        else:
                            walk(v)
                elif isinstance(node, list):
                    for v in node:
                        walk(v)

            walk(doc)
            if len(found) != 1:
                raise SystemExit(f"{ref}: {len(found)} containers named {container!r}")
            return found[0]
    raise SystemExit(f"no {ref} in the manifest")


def expand(text: str, env: dict, where: str) -> str:
    def sub(m):
        if m.group(1) not in env:
            raise SystemExit(f"{where}: $({m.group(1)}) is not defined before it")
        return env[m.group(1)]

    return _REF.sub(sub, str(text))


def resolve(container: dict, overrides: dict) -> tuple[list[str], dict]:
    """The container's argv and env, with ``overrides`` applied and ``$(VAR)`` expanded."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        n = e["name"]
        if n in overrides:
            env[n] = overrides[n]
        elif "value" in e:
            env[n] = expand(e["value"], env, f"env {n}")
        else:
            raise SystemExit(f"env {n} comes from {list(e.get('valueFrom', {}))}: give it with --set {n}=...")
    for n, v in overrides.items():
        env.setdefault(n, v)
    argv = [expand(a, env, "args") for a in list(container.get("command", [])) + list(container.get("args", []))]
    return argv, env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("resource", help="KIND/NAME, e.g. DaskCluster/kmeans")
    ap.add_argument("container")
    ap.add_argument("--set", action="append", default=[], metavar="VAR=VALUE")
    ap.add_argument("--print", action="store_true", help="print the command instead of running it")
    a = ap.parse_args(argv)
    with open(a.manifest) as f:
        docs = list(yaml.safe_load_all(f))
    overrides = dict(s.split("=", 1) for s in a.set)
    cmd, env = resolve(find_container(docs, a.resource, a.container), overrides)
    if a.print:
        print(shlex.join(cmd))
        return
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, {**os.environ, **env})


if __name__ == "__main__":
    main()
