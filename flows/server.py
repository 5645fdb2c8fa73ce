"""A local Prefect API for command-line runs: PREFECT_API_URL if set, else a ``prefect server`` on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_prefect_server(timeout: float = 180.0):
    """Use PREFECT_API_URL if set; else run ``prefect server start`` on a free port until exit.

    The server binds to 127.0.0.1 only, keeps its database in ``PREFECT_HOME`` (default: the
    repository's ``.prefect`` folder) and logs to ``PREFECT_HOME/demo-server.log``.  While the
    context is open ``PREFECT_API_URL`` points at it (also for processes started from here, such as
    Dask workers); on exit the pending logs and events are sent, and the server is stopped
    (SIGTERM, then SIGKILL after 20 s).

    Parameters
    ----------
    timeout : float, default: 180.0
        Seconds to wait for the server to answer its health check.

    Yields
    ------
    str
        The API URL, e.g. ``http://127.0.0.1:<port>/api``.

    Raises
    ------
    RuntimeError
        If the server exits or does not answer within ``timeout`` seconds.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = open(home / "demo-server.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server did not start; see {home / 'demo-server.log'}") from None
                time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = api  # for processes started from here (Dask workers)
        if "prefect" in sys.modules:  # already imported: its settings were read at import
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: api}):
                yield api
        else:
            yield api
    finally:
        _drain_prefect_workers()  # send the last logs and events while the server is still up
        os.environ.pop("PREFECT_API_URL", None)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _drain_prefect_workers(timeout: float = 15.0):
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for w in (APILogWorker, EventsWorker):
            try:
                w.drain_all(timeout=timeout)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
    except ImportError:  # pragma: no cover
        pass
