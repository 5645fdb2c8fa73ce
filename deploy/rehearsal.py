"""Small steps of ``deploy/rehearse.sh`` that talk to the Prefect API or read the run folders.

``python deploy/rehearsal.py health URL TIMEOUT``      wait until ``URL/health`` answers 200
``python deploy/rehearsal.py trigger DEPLOYMENT JSON``  create a flow run of the deployment, print its id
``python deploy/rehearsal.py wait ID TIMEOUT``          wait for a terminal state (API outages tolerated),
                                                      print it; exit 0 only for Completed
``python deploy/rehearsal.py state ID``                 the flow run's state name (``final`` after it when final)
``python deploy/rehearsal.py progress GLOB``            ``<iteration> <pid> <done>`` of the fit whose
                                                      folder matches GLOB (``0 0 0`` before it starts)
``python deploy/rehearsal.py until ITER GLOB SECONDS ID [allow-done]``  wait until the fit in GLOB has
                                                      checkpointed ITER iterations, print ``<iteration> <pid>``
``python deploy/rehearsal.py same A.npz B.npz``         exit 0 when the saved centers are bit-identical
``python deploy/rehearsal.py info FIT.npz``             ``n_iter=<n> resumed_from=<i>`` of a finished fit
"""
from __future__ import annotations

import glob
import json
import sys
import time
import urllib.request

import numpy as np


def health(url: str, timeout: float) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as r:
                if r.status == 200:
                    return 0
        except OSError:
            pass
        time.sleep(0.5)
    print(f"no Prefect API at {url} after {timeout:.0f} s", file=sys.stderr)
    return 1


def trigger(deployment: str, params: str) -> int:
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=json.loads(params), timeout=0)
    print(run.id)
    return 0


def wait(run_id: str, timeout: float) -> int:
    from prefect.client.orchestration import get_client

    end, last, outage = time.monotonic() + timeout, None, 0
    while time.monotonic() < end:
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
        except Exception:  # the API is down (a restart): try again
            outage += 1
            time.sleep(1)
            continue
        if state is not None and state.name != last:
            last = state.name
            print(f"flow run {run_id}: {state.name}", file=sys.stderr)
        if state is not None and state.is_final():
            print(state.name)
            return 0 if state.is_completed() else 1
        time.sleep(1)
    print("Timeout")
    return 1


def state(run_id: str) -> int:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            st = client.read_flow_run(run_id).state
        print(st.name if st is not None else "None", "final" if st is not None and st.is_final() else "")
    except Exception as exc:  # the API is down
        print("Unknown", type(exc).__name__)
    return 0


def progress(pattern: str) -> int:
    dirs = sorted(glob.glob(pattern))
    if not dirs:
        print("0 0 0")
        return 0
    d = dirs[0]
    done = int(bool(glob.glob(f"{d}/fit.npz")))
    try:
        with np.load(f"{d}/checkpoint.npz", allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        meta = {}
    print(int(meta.get("iteration", 0)), int(meta.get("pid", 0)), done)
    return 0


def _progress(pattern: str) -> tuple[int, int, bool]:
    dirs = sorted(glob.glob(pattern))
    if not dirs:
        return 0, 0, False
    done = bool(glob.glob(f"{dirs[0]}/fit.npz"))
    try:
        with np.load(f"{dirs[0]}/checkpoint.npz", allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        meta = {}
    return int(meta.get("iteration", 0)), int(meta.get("pid", 0)), done


def until(iteration: str, pattern: str, timeout: str, run_id: str, allow_done: str = "") -> int:
    """Poll the fit's checkpoint every 0.1 s (and the run's state every 3 s) until ``iteration``."""
    from prefect.client.orchestration import get_client

    end, next_state = time.monotonic() + float(timeout), time.monotonic() + 3
    while time.monotonic() < end:
        it, pid, done = _progress(pattern)
        if it >= int(iteration):
            if done and not allow_done:
                print("the fit ended before the fault could be injected")
                return 1
            print(it, pid)
            return 0
        if time.monotonic() > next_state:
            next_state = time.monotonic() + 3
            try:
                with get_client(sync_client=True) as client:
                    st = client.read_flow_run(run_id).state
                if st is not None and st.is_final():
                    print(f"the run ended {st.name} before its fit reached iteration {iteration}")
                    return 1
            except Exception:  # noqa: BLE001 - the API is down: keep polling the files
                pass
        time.sleep(0.1)
    print(f"the fit did not reach iteration {iteration} in {timeout} s")
    return 1


def same(a: str, b: str) -> int:
    with np.load(a) as za, np.load(b) as zb:
        ca, cb = za["centers"], zb["centers"]
    ok = ca.dtype == cb.dtype and ca.shape == cb.shape and ca.tobytes() == cb.tobytes()
    print(f"centers {ca.shape} {ca.dtype}: {'bit-identical' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def info(path: str) -> int:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
    print(f"n_iter={meta['n_iter']} resumed_from={meta.get('resumed_from', 0)}")
    return 0


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    fn = {"health": lambda u, t: health(u, float(t)), "trigger": trigger,
          "wait": lambda i, t: wait(i, float(t)), "state": state, "until": until, "progress": progress, "same": same, "info": info}[cmd]
    sys.exit(fn(*args))
