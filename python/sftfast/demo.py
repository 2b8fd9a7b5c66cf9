"""The built-in demo: a generated bilingual SFT set and a tokenizer trained on it, offline."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
from sftfast.tokenizer import Tokenizer

__all__ = ["demo_config", "demo_conversations", "demo_frame", "demo_tokenizer",
           "demo_tokenizer_json"]


def demo_frame(n: int = 20_000, *, seed: int = 0) -> pl.DataFrame:
    """``n`` generated rows: ``id, category, lang, question, answer`` (English and Chinese,
    log-normal lengths, skewed categories, a few empty and null answers).

    >>> import sftfast
    >>> sftfast.demo_frame(3).columns
    ['id', 'category', 'lang', 'question', 'answer']
    """
    return _native.demo_rows(n, seed=seed)


@functools.cache
def demo_tokenizer_json(vocab_size: int = 2000) -> str:
    """The ``tokenizer.json`` text of :func:`demo_tokenizer` (write it to a file for the CLI)."""
    sample = demo_frame(3000, seed=12345)
    texts = pl.concat([sample["question"], sample["answer"].drop_nulls()])
    return str(_native.train_demo_tokenizer(texts, vocab_size=vocab_size))


def demo_tokenizer(vocab_size: int = 2000) -> Tokenizer:
    """A byte-level BPE (Qwen2 layout) trained in-process on demo text; cached per process.

    >>> import sftfast
    >>> sftfast.demo_tokenizer().fast_path
    True
    """
    return Tokenizer.from_json(demo_tokenizer_json(vocab_size))


def demo_conversations(n: int = 20_000, *, seed: int = 0) -> pl.DataFrame:
    """:func:`demo_frame` as OpenAI ``messages`` rows (``messages``, ``category``, ``lang``),
    with duplicates added the way real sets have them: ~2% exact copies with other case and
    spacing, ~3% near copies (a word changed).

    >>> import sftfast
    >>> sftfast.demo.demo_conversations(100).columns
    ['messages', 'category', 'lang']
    """
    base = demo_frame(n, seed=seed)
    n_exact, n_near = n // 50, 3 * n // 100
    exact = base.sample(n_exact, seed=seed + 1).with_columns(
        pl.col("question").str.to_uppercase(), pl.col("answer").str.replace_all(" ", "  "))
    near = base.sample(n_near, seed=seed + 2).with_columns(
        pl.col("answer").str.replace(r"^(\S+) (\S+)", "${2} ${1}"))
    rows = pl.concat([base, exact, near]).sample(fraction=1.0, shuffle=True, seed=seed + 3)
    return rows.select(
        messages=pl.concat_list(
            pl.struct(role=pl.lit("user"), content=pl.col("question")),
            pl.struct(role=pl.lit("assistant"), content=pl.col("answer"))),
        category="category", lang="lang")


def demo_config(folder: str | os.PathLike[str], n: int = 20_000, *,
                seed: int = 0) -> dict[str, Any]:
    """Write :func:`demo_conversations` to ``<folder>/input/demo.jsonl`` and the demo
    tokenizer to ``<folder>/input/tokenizer.json``, and return a full pipeline config over them
    (read → length filter → exact and near dedup → UniMax rebalance → ChatML render → shards).
    """
    inp = Path(folder) / "input"
    inp.mkdir(parents=True, exist_ok=True)
    data, tok = inp / "demo.jsonl", inp / "tokenizer.json"
    if not data.is_file():
        tmp = inp / f"demo.jsonl.tmp-{os.getpid()}"
        demo_conversations(n, seed=seed).write_ndjson(tmp)
        os.replace(tmp, data)
    if not tok.is_file():
        tmp = inp / f"tokenizer.json.tmp-{os.getpid()}"
        tmp.write_text(demo_tokenizer_json(), encoding="utf-8")
        os.replace(tmp, tok)
    return {
        "tokenizer": str(tok), "seed": seed, "output": str(Path(folder)), "rejects": True,
        "steps": [
            {"read": {"paths": [str(data)]}},
            {"length_filter": {"prompt": [2, 256], "response": [4, 1024], "max_total": 1152}},
            {"exact_dedup": {}},
            {"near_dedup": {"threshold": 0.8}},
            {"rebalance": {"category_column": "category", "method": "unimax",
                           "budget": n // 2, "max_epochs": 4}},
            {"render": {"template": "chatml"}},
            {"write_shards": {"seq_len": 1024}},
        ],
    }
