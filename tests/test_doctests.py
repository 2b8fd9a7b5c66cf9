"""Run the docstring examples of every public module (README examples run via --doctest-glob)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["sftfast", "sftfast.expr", "sftfast.filter", "sftfast.tokenizer", "sftfast.demo", "sftfast.io",
           "sftfast.shards", "sftfast.render", "sftfast.reader", "sftfast.pack",
           "sftfast.pipeline", "sftfast.steps", "sftfast.report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
