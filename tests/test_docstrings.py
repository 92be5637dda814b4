"""Docstring examples are tests too, so the documentation stays true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import blspeech

MODULES = sorted(m.name for m in pkgutil.walk_packages(blspeech.__path__, "blspeech.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


def test_examples_exist():
    attempted = sum(doctest.testmod(importlib.import_module(n)).attempted for n in
                    ("blspeech.models.big_little", "blspeech.models.profile",
                     "blspeech.text.tokenizers", "blspeech.decoding.ctc",
                     "blspeech.models.speech"))
    assert attempted >= 10
