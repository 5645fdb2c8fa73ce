"""Smoke tests of issue 23's benchmark scripts: each runs with ``--quick`` and prints its Markdown tables.

No timed assertions: the numbers of a quick run on a shared machine mean nothing; the tests check that the
scripts run end to end (seeding, mini-batch, scaling with a streamed Zarr store on a LocalCluster, the plot).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


def run_quick(script, *extra, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def table_headers(out):
    """The header lines of the Markdown tables printed (a line followed by a | --- | separator line)."""
    lines = out.splitlines()
    return [a for a, b in zip(lines, lines[1:]) if a.startswith("| ") and b.startswith("| ---")]


def test_bench_seeding_quick(tmp_path):
    out = run_quick("bench_seeding.py", tmp_path=tmp_path)
    heads = table_headers(out)
    assert len(heads) == 2
    assert "seeding s" in heads[0] and "seed inertia" in heads[0]
    assert r"ours init_centers k-means\|\|" in out  # the pipes escaped: the row keeps its cells


def test_bench_minibatch_quick(tmp_path):
    out = run_quick("bench_minibatch.py", tmp_path=tmp_path)
    heads = table_headers(out)
    assert len(heads) == 1
    assert "time s" in heads[0] and "inertia / Lloyd's" in heads[0]
    for measured in ("fit() budgets", "partial_fit loop", "default fit()"):
        assert f"| {measured} |" in out


def test_bench_scaling_quick(tmp_path):
    png = tmp_path / "scaling.png"
    out = run_quick("bench_scaling.py", "--plot", str(png), "--tmp", str(tmp_path), tmp_path=tmp_path)
    heads = table_headers(out)
    assert len(heads) == 2
    assert all("ns/row/iter" in h and "GEMM prediction" in h for h in heads)
    assert "streamed, 2 workers" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.startswith("bench-scaling-") for p in tmp_path.iterdir())  # the store is removed


@pytest.mark.parametrize("script", ["bench_seeding.py", "bench_minibatch.py", "bench_scaling.py"])
def test_full_size_command_in_docstring(script):
    text = (BENCH / script).read_text()
    assert f".venv/bin/python benchmarks/{script}" in text.split('"""')[1]


def test_bench_latent_kmeans_quick(tmp_path):
    out = run_quick("bench_latent_kmeans.py", tmp_path=tmp_path)
    heads = table_headers(out)
    assert len(heads) == 1 and "vs sharded" in heads[0]
    assert "same centers: True" in out  # the sharded and the gathered k-means agree bit for bit


def test_bench_adam_quick(tmp_path):
    out = run_quick("bench_adam.py", tmp_path=tmp_path)
    assert "| fused (kmeans_dist.deep.adam) |" in out and "| default (foreach) |" in out


def test_bench_ddp_step_quick(tmp_path):
    out = run_quick("bench_ddp_step.py", tmp_path=tmp_path)
    assert "| 2 DDP processes, 128 rows each |" in out and "| 1 process, 256 rows |" in out
    assert "all-reduce added to the backward pass:" in out


def test_bench_products_quick(tmp_path):
    out = run_quick("bench_products.py", tmp_path=tmp_path)
    assert "| features | k | GEMM path ms | direct loop ms | direct / GEMM | rule picks |" in table_headers(out)
    assert "| 300 | 10 |" in out and out.rstrip().endswith("| direct |")


def test_bench_algorithms_quick(tmp_path):
    out = run_quick("bench_algorithms.py", tmp_path=tmp_path)
    heads = table_headers(out)
    assert len(heads) == 1 and "fit hamerly (s)" in heads[0] and "first iter / lloyd iter" in heads[0]
    assert "std 1 " in out and "std 5 " in out
