from __future__ import annotations

from pathlib import Path

import pytest

import sftfast


@pytest.fixture(scope="session")
def tok() -> sftfast.Tokenizer:
    return sftfast.demo_tokenizer()


@pytest.fixture(scope="session")
def tok_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    p.write_text(sftfast.demo_tokenizer_json(), encoding="utf-8")
    return p
