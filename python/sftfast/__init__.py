"""sftfast: turn raw SFT data into training-ready token data, with the heavy work in Rust.

>>> import polars as pl, sftfast
>>> tok = sftfast.demo_tokenizer()
>>> df = pl.DataFrame({"q": ["Why is the sky blue?"], "a": ["Rayleigh scattering."]})
>>> sftfast.length_filter(df, fields={"q": (1, 64), "a": (1, 512)}, tokenizer=tok).stats.rows_kept
1
"""

from __future__ import annotations

import polars as pl

from sftfast import _native, steps
from sftfast import expr as _expr  # registers the `sft` namespace
from sftfast.dedup import (
    DedupStats,
    ExactDedupResult,
    NearDedupResult,
    exact_dedup,
    exact_key,
    minhash,
    near_dedup,
)
from sftfast.demo import demo_frame, demo_tokenizer, demo_tokenizer_json
from sftfast.exceptions import (
    ConfigError,
    FileError,
    InputError,
    SchemaError,
    SftfastError,
    ShardError,
    TokenizerError,
)
from sftfast.expr import length_reason, token_count
from sftfast.filter import FilterStats, LengthFilterResult, length_filter
from sftfast.io import scan_jsonl
from sftfast.pack import PackPlan, PackStats, pack_lengths
from sftfast.pipeline import Pipeline, RunResult, StepStats
from sftfast.reader import ReadResult, ReadStats, read
from sftfast.rebalance import MixPlan, Rebalanced, rebalance
from sftfast.render import RenderResult, render, render_expr
from sftfast.shards import ShardManifest, export_parquet, read_manifest, write_shards
from sftfast.tokenizer import Tokenizer, load_tokenizer

__version__: str = _native.__version__

__all__ = [
    "ConfigError",
    "DedupStats",
    "ExactDedupResult",
    "NearDedupResult",
    "FileError",
    "FilterStats",
    "InputError",
    "LengthFilterResult",
    "MixPlan",
    "PackPlan",
    "PackStats",
    "Pipeline",
    "RunResult",
    "StepStats",
    "ReadResult",
    "ReadStats",
    "Rebalanced",
    "RenderResult",
    "ShardManifest",
    "SchemaError",
    "SftfastError",
    "ShardError",
    "Tokenizer",
    "TokenizerError",
    "count_tokens",
    "exact_dedup",
    "exact_key",
    "minhash",
    "near_dedup",
    "pack_lengths",
    "read",
    "render",
    "render_expr",
    "read_manifest",
    "write_shards",
    "export_parquet",
    "demo_frame",
    "demo_tokenizer",
    "demo_tokenizer_json",
    "get_num_threads",
    "length_filter",
    "length_reason",
    "rebalance",
    "scan_jsonl",
    "load_tokenizer",
    "set_num_threads",
    "steps",
    "token_count",
]

del _expr


def count_tokens(
    texts: pl.Series | list[str | None], tokenizer: object, *, add_special_tokens: bool = False
) -> pl.Series:
    """Exact token counts (UInt32 Series; null stays null), computed in parallel.

    >>> import sftfast
    >>> sftfast.count_tokens(["", None], sftfast.demo_tokenizer()).to_list()
    [0, None]
    """
    tok = load_tokenizer(tokenizer)
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", texts, dtype=pl.String)
    return _native.count_tokens(
        tok.key, series, add_special_tokens=add_special_tokens, path=tok.path
    )


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for later calls (0 = default: ``SFTFAST_NUM_THREADS``, else all cores;
    1 in a forked DataLoader worker). Results never depend on it."""
    if not isinstance(n, int) or n < 0:
        raise ConfigError(f"n: expected an int >= 0, got {n!r}")
    _native.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count the next call uses."""
    return int(_native.get_num_threads())
