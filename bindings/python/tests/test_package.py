"""The installed package itself: typed, documented, one abi3 extension."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    "text",
    ["plain", "it's", 'say "hi"', "both ' and \"", "back\\slash", "tab\tnew\nline\r", "\x00\x1f\x7f\x85",
     "unicode é 日本 ✓", "\u2028sep"],
)
def test_reprs_read_like_python(text: str) -> None:
    d = podci.Diagnostic("warning", text, text, 3)
    assert repr(d) == f"Diagnostic(severity='warning', message={text!r}, file={text!r}, line=3, column=None)"
