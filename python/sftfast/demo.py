"""The built-in demo: a generated bilingual SFT set and a tokenizer trained on it, offline."""

from __future__ import annotations

import functools

import polars as pl

from sftfast import _native
from sftfast.tokenizer import Tokenizer

__all__ = ["demo_frame", "demo_tokenizer", "demo_tokenizer_json"]


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
