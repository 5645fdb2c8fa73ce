"""The notebooks in notebooks/: each one executes top to bottom, and each is stored without outputs.

Execution uses nbclient with the ``python3`` kernel of the running interpreter (jupyter_client runs a
kernelspec whose command is ``python`` with ``sys.executable``), working directory = notebooks/.
Set ``NOTEBOOK_OUTPUT_DIR`` to keep the executed copies (with outputs) there for inspection; the files
in notebooks/ are never written.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, f"expected at least three notebooks in {NB_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stripped(path):
    """No outputs, no execution counts, no widget state: what nbstripout leaves."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            dirty.append(f"cell {i}: {len(cell['outputs'])} outputs")
        if cell.get("execution_count") is not None:
            dirty.append(f"cell {i}: execution_count {cell['execution_count']}")
        if set(cell.get("metadata", {})) & {"execution", "scrolled", "collapsed"}:
            dirty.append(f"cell {i}: execution metadata")
    if "widgets" in nb.get("metadata", {}):
        dirty.append("notebook metadata holds widget state")
    assert not dirty, f"{path.name} is not stripped (run `nbstripout {path}`): " + "; ".join(dirty)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    nb = nbformat.read(path, as_version=4)
    env_before = {k: os.environ.get(k) for k in ("TMPDIR", "MPLBACKEND")}
    # temp files of the notebook (stores, figures) go under this test's tmp_path
    os.environ["TMPDIR"] = str(tmp_path)
    os.environ.pop("MPLBACKEND", None)  # the notebooks choose the inline backend themselves
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(NB_DIR)}})
        t0 = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - t0
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out_dir = os.environ.get("NOTEBOOK_OUTPUT_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, Path(out_dir) / path.name)
    print(f"{path.name}: {seconds:.1f} s")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    # nothing left behind in the repository by the run
    assert not any(NB_DIR.glob("*.zarr")), "a notebook wrote a store into notebooks/"
