"""The Examples sections of the library's docstrings run and print what they say."""
import doctest
import importlib
import pkgutil

import pytest

import kmeans_dist

MODULES = sorted(m.name for m in pkgutil.walk_packages(kmeans_dist.__path__, "kmeans_dist."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name}"
