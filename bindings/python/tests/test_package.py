"""The installed package itself: typed, documented, one abi3 extension."""

from __future__ import annotations

import doctest
from pathlib import Path

import podci
import podci.image


def test_docstring_examples_run() -> None:
    result = doctest.testmod(podci)
    assert result.attempted > 0 and result.failed == 0


def test_ships_stubs_and_py_typed() -> None:
    package = Path(podci.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_native.pyi").exists()
    # abi3: one extension module for every CPython 3.11+.
    (native,) = list(package.glob("_native*.so"))
    assert native.name == "_native.abi3.so"


def test_public_names() -> None:
    assert set(podci.__all__) <= set(dir(podci))
    assert set(podci.image.__all__) <= set(dir(podci.image))
    assert podci.__version__ == "0.1.0"
    assert podci.image.copy_async.__name__ == "copy_async"
