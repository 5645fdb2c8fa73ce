"""The documentation builds: ``mkdocs build --strict`` (warnings are errors, docstrings parsed as numpydoc by
mkdocstrings), and the README's and the docs' links to files of the repository point at files that exist."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error (broken links, docstring parse warnings, missing pages)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python is not installed")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                        "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
    site = tmp_path / "site"
    for page in ("index.html", "architecture/index.html", "guide/determinism/index.html",
                 "api/estimators/index.html", "api/kernels/index.html"):
        assert (site / page).is_file(), page
    # the API reference is rendered from the docstrings, not left empty
    api = (site / "api/estimators/index.html").read_text()
    assert "kmeans_dist.KMeans" in api and "n_clusters" in api


def _relative_links(md: Path):
    for target in LINK.findall(md.read_text()):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        yield target.split("#")[0]


@pytest.mark.parametrize("md", ["README.md", "deploy/README.md"])
def test_readme_links_exist(md):
    """Every relative link of the README points at a file or folder of the repository."""
    path = ROOT / md
    missing = [t for t in _relative_links(path) if t and not (path.parent / t).exists()]
    assert not missing, f"{md} links to missing files: {missing}"


def test_readme_is_for_users():
    """The README stays short and says nothing about how the work was done."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    assert not re.search(r"\bsessions?\b", text, re.IGNORECASE)
    assert "CONTRACT.md" not in text
