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
    """A flow parameter is invalid, or a resource it names (source, Dask scheduler) is unusable."""


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
    """Parameters of ``clustering_flow``."""

    k: int = Field(8, ge=1, le=100_000, description="Number of clusters")
    algorithm: Literal["lloyd", "hamerly", "minibatch"] = Field(
        "lloyd", description="lloyd; hamerly (the same iterations, bounds skip most distances); minibatch")
    batch_size: int = Field(1024, ge=1)


class ChooseKParams(_Common):
    """Parameters of ``choose_k_flow``: every k in ``k_min..k_max`` (step ``k_step``), or ``ks``."""

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
    """Build ``model`` from ``values``; raise :class:`ParameterError` with a readable message."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise ParameterError(_format_error(model, flow_name, exc)) from None


def check_source(source: str) -> str:
    """Resolve ``source`` (``'mnist'`` -> the MNIST folder) and check that it exists
    (:func:`kmeans_dist.data.resolve_source`), as a :class:`ParameterError` of the flow."""
    from kmeans_dist.data import DataError, resolve_source

    try:
        return resolve_source(source)
    except DataError as exc:
        raise ParameterError(str(exc)) from None


def check_dask_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (before any work) if no Dask scheduler listens at ``address``."""
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
    """``<source name>-<fingerprint of the parameters>``: the folder of one run's parameters.

    The fingerprint covers every parameter that changes a result (not the output folder nor where the
    run computes), so a re-run with the same parameters finds its cache and checkpoints, and two runs
    with different parameters never share a file."""
    import hashlib
    import json

    keep = params.model_dump(exclude={"output_dir", "dask_address", "n_workers", "threads_per_worker"})
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(params.source).rstrip("/")).name or "data").strip("-")[:40]
    return f"{name}-{digest}"


def default_output_dir(flow_name: str, params: BaseModel, base: str | os.PathLike = "runs") -> str:
    """The run folder: ``<output_dir>/<run_name>`` when the user gave ``output_dir``, else
    ``runs/<flow_name>/<run_name>`` (see :func:`run_name`)."""
    if getattr(params, "output_dir", None):
        return str((Path(os.path.expanduser(params.output_dir)) / run_name(params)).resolve())
    return str((Path(base) / flow_name / run_name(params)).resolve())


def cli_parser(model: type[BaseModel], prog: str, description: str | None = None):
    """An ``argparse`` parser with one ``--flag`` per field of ``model``: booleans as ``--x/--no-x``,
    ``list[int]`` fields as ``nargs="+"`` ints, everything else as a string that the flow's own parameter
    validation coerces (so the CLI and the UI form give the same messages)."""
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
    """``python -m flows.<name>``: parse ``argv`` with :func:`cli_parser`, run ``flow`` against
    ``PREFECT_API_URL`` (or a local ``prefect server`` started for the run), print ``keys`` of its result
    as JSON and return the result."""
    import json

    from flows.server import local_prefect_server

    args = vars(cli_parser(model, prog, flow.description).parse_args(argv))
    with local_prefect_server():
        res = flow(**args)
    print(json.dumps({k: res[k] for k in keys}, default=str))
    return res
