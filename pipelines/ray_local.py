"""A local Ray instance whose every server listens on the loopback interface only.

``ray.init(_node_ip_address="127.0.0.1")`` is not enough with Ray 2.60 on Linux: Ray replaces a loopback
node address by the host's outward address (``ray._private.services.resolve_ip_for_localhost``, unless
``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is false, i.e. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and
with a non-loopback node address the GCS server, the raylet (node manager and object manager), every core
worker and the dashboard agent bind their gRPC servers to every interface (``0.0.0.0``/``::``), the metrics
exporter and the dashboard head's gRPC server to ``0.0.0.0``, and the runtime-env agent to the outward
address.  With the node address kept at 127.0.0.1 every one of them binds loopback (the gRPC servers as
``::ffff:127.0.0.1``, an IPv6 socket for the IPv4 loopback address).  :func:`init_local_ray` does that, and
starts no dashboard unless asked (the one it starts then listens on 127.0.0.1).

Ray Train's ``TorchConfig`` creates the ``torch.distributed`` rendezvous store (c10d ``TCPStore``) on the
rank-0 worker, and PyTorch binds that store's server to every interface (``::``), whatever ``MASTER_ADDR``
says.  :func:`loopback_torch_config` returns a ``TorchConfig`` whose backend opens that store on a socket
bound to 127.0.0.1 (``TCPStore(master_listen_fd=...)``) and pins Gloo and NCCL to the loopback interface.

:func:`listening_sockets` lists the TCP sockets a process tree listens on (this process and its
descendants by default: the Ray processes a driver started), and :func:`non_loopback` keeps those bound to
a wildcard or a non-loopback address: the tests fail on any of them.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from datetime import timedelta
from typing import NamedTuple

__all__ = ["LOOPBACK", "init_local_ray", "listening_sockets", "non_loopback", "is_loopback",
           "ray_is_loopback", "loopback_torch_config", "open_loopback_store", "join_loopback_group",
           "ListeningSocket"]

LOOPBACK = "127.0.0.1"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ListeningSocket(NamedTuple):
    """One listening TCP socket: the owning process and the bound address."""

    pid: int
    name: str
    address: str
    port: int


def init_local_ray(num_cpus: int | None = None, object_store_memory: int | None = None, *,
                   include_dashboard: bool = False, **kw):
    """Start a local Ray instance whose processes all listen on 127.0.0.1; return ``ray.init``'s context.

    Parameters
    ----------
    num_cpus, object_store_memory : int, optional
        Passed to ``ray.init``.
    include_dashboard : bool, default=False
        Start Ray's dashboard (it listens on ``dashboard_host``, default 127.0.0.1).
    **kw
        Further ``ray.init`` arguments (``log_to_driver``, ``runtime_env``, ``dashboard_port``...).  A
        ``_node_ip_address`` or ``dashboard_host`` given here replaces the loopback default (the caller then
        asks for non-loopback binds); ``address`` must be ``"local"`` or absent.

    Notes
    -----
    Ray 2.60 turns a loopback node address into the host's outward address unless its
    ``ENABLE_RAY_CLUSTER`` switch is off; it is switched off (and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    set for the processes Ray spawns) only while ``ray.init`` runs, then restored.
    """
    import ray

    # Ray's switch for "resolve a loopback node address to the outward one"; no public option sets it once
    # ray is imported (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is read at import), so it is flipped for ray.init only.
    ray_constants = ray._private.ray_constants
    address = kw.pop("address", "local")
    if address != "local":
        raise ValueError(f"init_local_ray starts a local instance; got address={address!r}")
    kw.setdefault("_node_ip_address", LOOPBACK)
    if include_dashboard:
        kw.setdefault("dashboard_host", LOOPBACK)
    if num_cpus is not None:
        kw["num_cpus"] = num_cpus
    if object_store_memory is not None:
        kw["object_store_memory"] = object_store_memory
    old_env, old_flag = os.environ.get(_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    if is_loopback(kw["_node_ip_address"]):
        os.environ[_CLUSTER_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        return ray.init(address="local", include_dashboard=include_dashboard, **kw)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = old_env


def ray_is_loopback() -> bool:
    """Whether the connected Ray instance's alive nodes all have a loopback address (a local instance)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(is_loopback(n.get("NodeManagerAddress", "")) for n in nodes)


def is_loopback(address: str) -> bool:
    """Whether ``address`` is a loopback IP (IPv4-mapped IPv6 included); wildcards and names are not."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def listening_sockets(pids=None) -> list[ListeningSocket]:
    """The TCP sockets in the LISTEN state of the processes ``pids`` (default: this process and its descendants).

    Processes that exit while they are inspected are skipped.  Returns a list of
    :class:`ListeningSocket` ``(pid, name, address, port)``, sorted.
    """
    import psutil

    if pids is None:
        me = psutil.Process()
        procs = [me] + me.children(recursive=True)
    else:
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
    found = set()
    for p in procs:
        try:
            name = p.name()
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr:
                found.add(ListeningSocket(p.pid, name, c.laddr.ip, c.laddr.port))
    return sorted(found)


def non_loopback(sockets) -> list[ListeningSocket]:
    """The sockets of ``sockets`` bound to a wildcard (``0.0.0.0``, ``::``) or a non-loopback address."""
    return [s for s in sockets if not is_loopback(s.address)]


# --- Ray Train: the torch.distributed rendezvous store on loopback -------------------------------------

_STORE = {}  # per Ray Train worker process: the rank-0 TCPStore and its listening socket, kept alive


def _pin_loopback_interfaces():
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")


def open_loopback_store(world_size: int, timeout_s: int = 1800) -> int:
    """Open, in this (rank-0) process, a c10d ``TCPStore`` server on a socket bound to 127.0.0.1.

    The store stays open in this process (a later call replaces it); :func:`join_loopback_group` with
    ``rank=0`` in the same process uses it.  Returns its port.
    """
    import socket

    import torch.distributed as dist

    old = _STORE.pop("store", None)
    if old is not None:
        old[1].close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    store = dist.TCPStore(LOOPBACK, port, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                          wait_for_workers=False, multi_tenant=True, master_listen_fd=sock.fileno())
    _STORE["store"] = (store, sock)
    return port


def join_loopback_group(backend: str, rank: int, world_size: int, port: int, timeout_s: int = 1800) -> None:
    """Join the ``torch.distributed`` process group whose store :func:`open_loopback_store` opened on ``port``.

    Rank 0 must run in the process that opened the store.  Gloo and NCCL are pinned to ``lo`` (Linux) unless
    ``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME`` are set.
    """
    import torch.distributed as dist

    _pin_loopback_interfaces()
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = LOOPBACK, str(port)
    if rank == 0:
        store = _STORE["store"][0]
    else:
        store = dist.TCPStore(LOOPBACK, port, world_size, is_master=False, timeout=timedelta(seconds=timeout_s))
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


def _set_rank_env() -> None:
    """torchrun's environment variables, from the Ray Train context (as Ray's own torch backend sets them)."""
    import ray.train

    ctx = ray.train.get_context()
    os.environ.update(LOCAL_RANK=str(ctx.get_local_rank()), LOCAL_WORLD_SIZE=str(ctx.get_local_world_size()),
                      NODE_RANK=str(ctx.get_node_rank()), RANK=str(ctx.get_world_rank()),
                      WORLD_SIZE=str(ctx.get_world_size()))


def _leave_group(destroy: bool) -> None:
    import torch.distributed as dist

    if destroy and dist.is_initialized():
        dist.destroy_process_group()
    old = _STORE.pop("store", None)
    if old is not None:
        old[1].close()


def loopback_torch_config(backend: str | None = None, timeout_s: int = 1800):
    """A Ray Train ``TorchConfig`` whose process group rendezvous listens on 127.0.0.1 only.

    For a Ray instance whose nodes are all on this host (:func:`ray_is_loopback`): the rank-0 worker opens
    the c10d ``TCPStore`` on a socket bound to 127.0.0.1 (PyTorch's own would listen on ``::``), every worker
    joins the process group through it, and Gloo/NCCL are pinned to the ``lo`` interface (Linux).
    ``backend`` as in ``TorchConfig`` (None: ``nccl`` with GPUs, else ``gloo``).  The workers get
    ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and ``NODE_RANK`` as with Ray's own backend.
    """
    import ray
    from ray.train.backend import Backend
    from ray.train.torch import TorchConfig

    class LoopbackTorchBackend(Backend):
        share_cuda_visible_devices = True

        def on_start(self, worker_group, backend_config):
            name = backend_config.backend
            if name is None:
                name = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
            n = len(worker_group)
            port = worker_group.execute_single(0, open_loopback_store, n, backend_config.timeout_s)
            try:
                worker_group.execute(_set_rank_env)
            except Exception:  # a worker group without a train context yet: on_training_start sets them
                pass
            ray.get([worker_group.execute_single_async(i, join_loopback_group, name, i, n, port,
                                                       backend_config.timeout_s) for i in range(n)])

        def on_training_start(self, worker_group, backend_config):
            worker_group.execute(_set_rank_env)

        def on_shutdown(self, worker_group, backend_config):
            try:
                ray.get(worker_group.execute_async(_leave_group, len(worker_group) > 1), timeout=60)
            except Exception:  # a dead worker: its group goes with it
                pass

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackTorchBackend

    return LoopbackTorchConfig(backend=backend, timeout_s=timeout_s)
