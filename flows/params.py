"""Validated parameters of the clustering flows (pydantic v2).

The flows take flat keyword parameters (so deployments, the UI form and the CLI stay simple) and
validate them all at once through these models *before* any work starts, so a bad parameter ends the
flow run Failed with one message that says what to fix, and nothing is written anywhere.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ParameterError", "ClusteringParams", "ChooseKParams", "validate_params", "check_source",
           "check_dask_address", "default_output_dir", "run_name", "cli_parser", "run_cli"]

_ADDRESS = re.compile(r"^(tcp|tls)://(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")


class ParameterError(ValueError):
    """A flow parameter is invalid, or a resource it names (source, Dask scheduler) is unusable.

    Raised before any work starts; the message says what to fix.  A subclass of :class:`ValueError`.
    """


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        "sklearn-digits",
        description="Input data: a Zarr store, a .npy/.csv/.parquet file, an MNIST folder, "
                    "'mnist' (found through MNIST_DIR) or 'sklearn-digits'.")
    init: Literal["k-means++", "k-means||", "random", "random-partition"] = "k-means++"
    standardize: bool = False
    n_init: int = Field(1, ge=1, le=100)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    output_dir: Optional[str] = Field(None, description="Base folder: each run writes under <output_dir>/<source>-<parameters fingerprint> "
                                      "(default runs/<flow>/...), so runs with other parameters never share files")
    dask_address: Optional[str] = Field(None, description="tcp://host:port of a Dask scheduler; "
                                                          "empty: start a LocalCluster")
    n_workers: int = Field(2, ge=1, le=64, description="LocalCluster worker processes")
    threads_per_worker: int = Field(1, ge=1, le=64)
    max_iter: int = Field(300, ge=1, le=100_000)
    tol: float = Field(1e-4, ge=0.0)
    limit: Optional[int] = Field(None, ge=1, description="Keep only the first rows of an MNIST source")
    chunk_rows: Optional[int] = Field(None, ge=1)
    silhouette_sample: int = Field(2000, ge=0, le=50_000)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("source is empty: give a Zarr store, a .npy/.csv/.parquet file, an MNIST "
                             "folder, 'mnist' or 'sklearn-digits'")
        return v

    @field_validator("dask_address")
    @classmethod
    def _address(cls, v):
        if v is None or not str(v).strip():
            return None
        v = str(v).strip()
        if "://" not in v:
            v = "tcp://" + v
        m = _ADDRESS.match(v)
        if not m or not (0 < int(m.group("port")) < 65536):
            raise ValueError(f"dask_address {v!r} is not of the form tcp://HOST:PORT "
                             "(e.g. tcp://127.0.0.1:8786); leave it empty to start a local cluster")
        return v

    @field_validator("output_dir")
    @classmethod
    def _output(cls, v):
        if v is None or not str(v).strip():
            return None
        return str(Path(os.path.expanduser(str(v).strip())).resolve())


class ClusteringParams(_Common):
    """Parameters of ``clustering_flow``.

    A frozen pydantic model that forbids unknown fields.  Besides the fields shared with
    :class:`ChooseKParams` (``source``, ``init``, ``standardize``, ``n_init``, ``seed``,
    ``output_dir``, ``dask_address``, ``n_workers``, ``threads_per_worker``, ``max_iter``, ``tol``,
    ``limit``, ``chunk_rows``, ``silhouette_sample``), it has ``k`` (number of clusters),
    ``algorithm`` (``'lloyd'``, ``'hamerly'`` or ``'minibatch'``) and ``batch_size``.  The source
    is stripped and must not be empty, ``dask_address`` must be ``tcp://HOST:PORT`` or
    ``tls://HOST:PORT`` (``tcp://`` is added when missing; empty means a local cluster), and ``output_dir`` is made absolute.

    Raises
    ------
    pydantic.ValidationError
        If a field is invalid or unknown (:func:`validate_params` turns it into a
        :class:`ParameterError`).

    Examples
    --------
    >>> p = ClusteringParams(k=3, dask_address="127.0.0.1:8786")
    >>> p.k, p.algorithm, p.dask_address
    (3, 'lloyd', 'tcp://127.0.0.1:8786')
    """

    k: int = Field(8, ge=1, le=100_000, description="Number of clusters")
    algorithm: Literal["lloyd", "hamerly", "elkan", "minibatch", "bisecting", "spherical", "kmedians",
                       "kmedoids"] = Field(
        "lloyd", description="lloyd; hamerly, elkan (the same iterations, bounds skip most distances); "
                             "minibatch; bisecting; spherical (cosine); kmedians (L1); kmedoids (centers are rows)")
    batch_size: int = Field(1024, ge=1)


class ChooseKParams(_Common):
    """Parameters of ``choose_k_flow``: every k in ``k_min..k_max`` (step ``k_step``), or ``ks``.

    A frozen pydantic model that forbids unknown fields, with the same shared fields (and checks)
    as :class:`ClusteringParams`; ``max_iter`` defaults to 100.

    Raises
    ------
    pydantic.ValidationError
        If a field is invalid or unknown, ``ks`` is empty or has a k below 1, or ``k_max`` is smaller
        than ``k_min``.

    Examples
    --------
    >>> ChooseKParams(k_min=2, k_max=6, k_step=2).k_values()
    [2, 4, 6]
    """

    k_min: int = Field(2, ge=1)
    k_max: int = Field(10, ge=1, le=100_000)
    k_step: int = Field(1, ge=1)
    ks: Optional[list[int]] = None
    max_iter: int = Field(100, ge=1, le=100_000)

    @model_validator(mode="after")
    def _range(self):
        if self.ks is not None:
            if not self.ks or any(k < 1 for k in self.ks):
                raise ValueError("ks must be a non-empty list of positive integers")
        elif self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) is smaller than k_min ({self.k_min})")
        return self

    def k_values(self) -> list[int]:
        """Return the values of k to fit.

        Returns
        -------
        list of int
            ``ks`` sorted without duplicates when given, else ``k_min..k_max`` in steps of ``k_step``.

        Examples
        --------
        >>> ChooseKParams(ks=[5, 3, 5]).k_values()
        [3, 5]
        """
        if self.ks is not None:
            return sorted(set(int(k) for k in self.ks))
        return list(range(self.k_min, self.k_max + 1, self.k_step))


def _format_error(model: type[BaseModel], flow_name: str, exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "parameters"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields))
            lines.append(f"- unknown parameter {loc!r} (allowed: {allowed})")
        else:
            lines.append(f"- {loc}: {msg} (got {got!r})" if not isinstance(got, dict) else f"- {loc}: {msg}")
    return f"Invalid parameters for {flow_name}; fix these and run again:\n" + "\n".join(lines)


def validate_params(model: type[BaseModel], values: dict, flow_name: str):
    """Build ``model`` from ``values``; raise :class:`ParameterError` with a readable message.

    Every invalid or unknown parameter is listed in the one message, so a flow can fail before any
    work starts and say everything to fix at once.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        The parameter model (:class:`ClusteringParams` or :class:`ChooseKParams`).
    values : dict
        The flow's parameters, by name.
    flow_name : str
        Name of the flow, for the message.

    Returns
    -------
    pydantic.BaseModel
        The validated parameters, an instance of ``model``.

    Raises
    ------
    ParameterError
        If a parameter is invalid or unknown.

    Examples
    --------
    >>> validate_params(ClusteringParams, {"k": 3}, "clustering_flow").k
    3
    >>> try:
    ...     validate_params(ClusteringParams, {"k": 0}, "clustering_flow")
    ... except ParameterError as exc:
    ...     print(exc)
    Invalid parameters for clustering_flow; fix these and run again:
    - k: Input should be greater than or equal to 1 (got 0)
    """
    try:
        return model(**values)
    except ValidationError as exc:
        raise ParameterError(_format_error(model, flow_name, exc)) from None


def check_source(source: str) -> str:
    """Resolve ``source`` and check that it exists.

    ``'mnist'`` resolves to the MNIST folder; the check is :func:`kmeans_dist.data.resolve_source`'s,
    its failure reported as a :class:`ParameterError` of the flow.

    Parameters
    ----------
    source : str
        A Zarr store, a ``.npy``/``.csv``/``.parquet`` file, an MNIST folder, ``'mnist'`` or
        ``'sklearn-digits'``.

    Returns
    -------
    str
        The resolved source.

    Raises
    ------
    ParameterError
        If the source does not exist or cannot be used.

    Examples
    --------
    >>> check_source("sklearn-digits")
    'sklearn-digits'
    >>> try:
    ...     check_source("/nonexistent/x.npy")
    ... except ParameterError as exc:
    ...     print(str(exc).split(";")[0])
    Source '/nonexistent/x.npy' does not exist
    """
    from kmeans_dist.data import DataError, resolve_source

    try:
        return resolve_source(source)
    except DataError as exc:
        raise ParameterError(str(exc)) from None


def check_dask_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (before any work) if no Dask scheduler listens at ``address``.

    Opens (and closes) one TCP connection to the scheduler's host and port.

    Parameters
    ----------
    address : str
        The scheduler, ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (as validated by the parameter
        models).
    timeout : float, default: 5.0
        Seconds to wait for the connection.

    Raises
    ------
    ParameterError
        If the scheduler cannot be reached; the message says how to start one.
    """
    m = _ADDRESS.match(address)
    host, port = m.group("host").strip("[]"), int(m.group("port"))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ParameterError(
            f"Cannot reach the Dask scheduler at {address} ({exc.strerror or exc}). Start one with "
            f"`dask scheduler --host {host} --port {port}` and some `dask worker {address}`, fix "
            "dask_address, or leave dask_address empty to run on a local cluster of n_workers processes."
        ) from None


def run_name(params: BaseModel) -> str:
    """Return ``<source name>-<fingerprint of the parameters>``: the folder of one run's parameters.

    The fingerprint covers every parameter that changes a result (not the output folder nor where the
    run computes), so a re-run with the same parameters finds its cache and checkpoints, and two runs
    with different parameters never share a file.

    Parameters
    ----------
    params : pydantic.BaseModel
        Validated parameters (:class:`ClusteringParams` or :class:`ChooseKParams`).

    Returns
    -------
    str
        The last part of the source (at most 40 characters of letters, digits, ``_``, ``.`` and
        ``-``), a dash and 10 hexadecimal characters.

    Examples
    --------
    >>> name = run_name(ClusteringParams(source="sklearn-digits", k=10))
    >>> name.startswith("sklearn-digits-"), len(name)
    (True, 25)
    >>> name == run_name(ClusteringParams(source="sklearn-digits", k=10, n_workers=4))
    True
    >>> name == run_name(ClusteringParams(source="sklearn-digits", k=11))
    False
    """
    import hashlib
    import json

    keep = params.model_dump(exclude={"output_dir", "dask_address", "n_workers", "threads_per_worker"})
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(params.source).rstrip("/")).name or "data").strip("-")[:40]
    return f"{name}-{digest}"


def default_output_dir(flow_name: str, params: BaseModel, base: str | os.PathLike = "runs") -> str:
    """Return the run folder.

    ``<output_dir>/<run_name>`` when the user gave ``output_dir``, else
    ``runs/<flow_name>/<run_name>`` (see :func:`run_name`), as an absolute path.  Nothing is created.

    Parameters
    ----------
    flow_name : str
        Name of the flow's folder under ``base``.
    params : pydantic.BaseModel
        Validated parameters; their ``output_dir``, if set, replaces ``base/flow_name``.
    base : str or os.PathLike, default: "runs"
        Base folder when ``output_dir`` is not set (relative to the working directory).

    Returns
    -------
    str
        Absolute path of the run folder.

    Examples
    --------
    >>> from pathlib import Path
    >>> p = ClusteringParams(source="sklearn-digits")
    >>> Path(default_output_dir("clustering", p)).parts[-3:-1]
    ('runs', 'clustering')
    >>> Path(default_output_dir("clustering", p)).name == run_name(p)
    True
    """
    if getattr(params, "output_dir", None):
        return str((Path(os.path.expanduser(params.output_dir)) / run_name(params)).resolve())
    return str((Path(base) / flow_name / run_name(params)).resolve())


def cli_parser(model: type[BaseModel], prog: str, description: str | None = None):
    """Build an ``argparse`` parser with one ``--flag`` per field of ``model``.

    Booleans become ``--x/--no-x``, ``list[int]`` fields ``nargs="+"`` ints, everything else a string
    that the flow's own parameter validation coerces (so the CLI and the UI form give the same
    messages).  Underscores in field names become dashes; the defaults are the fields' defaults.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        The parameter model.
    prog : str
        Program name shown in the usage line.
    description : str, optional
        Description shown by ``--help``.

    Returns
    -------
    argparse.ArgumentParser
        The parser.

    Examples
    --------
    >>> ap = cli_parser(ClusteringParams, "python -m flows.clustering")
    >>> args = vars(ap.parse_args(["--k", "5", "--standardize"]))
    >>> args["k"], args["standardize"], args["source"]
    ('5', True, 'sklearn-digits')
    """
    import argparse
    import typing

    ap = argparse.ArgumentParser(prog=prog, description=description)
    for name, fld in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = fld.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if ann is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=fld.default)
        elif args and typing.get_origin(args[0]) is list:
            ap.add_argument(flag, type=int, nargs="+", default=fld.default, help=fld.description)
        else:
            ap.add_argument(flag, default=fld.default, help=fld.description)
    return ap


def run_cli(model: type[BaseModel], flow, prog: str, keys, argv=None) -> dict:
    """Run a flow from the command line (``python -m flows.<name>``).

    Parse ``argv`` with :func:`cli_parser`, run ``flow`` against ``PREFECT_API_URL`` (or a local
    ``prefect server`` started for the run, see :func:`flows.server.local_prefect_server`), print
    ``keys`` of its result as JSON and return the result.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        The flow's parameter model (one flag per field).
    flow : prefect.Flow
        The flow to run; its description is the ``--help`` text.
    prog : str
        Program name shown in the usage line.
    keys : iterable of str
        Entries of the result to print.
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The flow's result.

    Raises
    ------
    SystemExit
        If the arguments cannot be parsed (from :mod:`argparse`).
    ParameterError
        If the flow's parameter validation fails.
    """
    import json

    from flows.server import local_prefect_server

    args = vars(cli_parser(model, prog, flow.description).parse_args(argv))
    with local_prefect_server():
        res = flow(**args)
    print(json.dumps({k: res[k] for k in keys}, default=str))
    return res
