"""Packing plans: which samples (or pieces of samples) go into which fixed-length row.

Best-fit-decreasing over the lengths column, in Rust (``rust/src/pack.rs``): O(n log n), O(n)
integers. Only indices are packed; the shard writer of issue #6 gathers the tokens.

>>> import sftfast
>>> plan = sftfast.pack_lengths([300, 700, 1000, 24, 5000], seq_len=1024)
>>> plan.stats.rows, plan.stats.truncated, plan.stats.tokens_lost
(3, 1, 3976)
>>> plan.pieces.columns
['row', 'sample', 'start', 'len']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from sftfast import _native
from sftfast.exceptions import ConfigError

__all__ = ["OVERLONG", "PackPlan", "PackStats", "pack_lengths"]

OVERLONG = ("drop", "truncate_right", "truncate_left", "split")


@dataclass(frozen=True)
class PackStats:
    """Counts of a packing; ``efficiency`` = real tokens / slots."""

    seq_len: int
    samples: int
    dropped: int
    truncated: int
    tokens_lost: int
    tokens_packed: int
    rows: int

    @property
    def efficiency(self) -> float:
        slots = self.rows * self.seq_len
        return self.tokens_packed / slots if slots else 1.0


@dataclass(frozen=True)
class PackPlan:
    """``pieces``: one row per (packed row, sample piece) with ``start`` and ``len`` tokens."""

    pieces: pl.DataFrame
    stats: PackStats


def pack_lengths(
    lengths: pl.Series | Sequence[int],
    *,
    seq_len: int,
    overlong: str = "truncate_right",
    max_per_row: int | None = None,
) -> PackPlan:
    """Plan rows of ``seq_len`` tokens from per-sample lengths (null or 0 = dropped).

    ``overlong`` decides samples longer than ``seq_len``: ``drop``, ``truncate_right`` (keep the
    start), ``truncate_left`` (keep the end) or ``split`` (pieces of at most ``seq_len``);
    ``max_per_row`` caps the samples per row. Same lengths → same plan.
    """
    if overlong not in OVERLONG:
        raise ConfigError(f"overlong: expected one of {OVERLONG}, got {overlong!r}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 0 < seq_len < 2**32:
        raise ConfigError(f"seq_len: expected an int in 1..2**32-1, got {seq_len!r}")
    if max_per_row is not None and (not isinstance(max_per_row, int) or max_per_row < 1):
        raise ConfigError(f"max_per_row: expected an int >= 1 or None, got {max_per_row!r}")
    s = lengths if isinstance(lengths, pl.Series) else pl.Series("len", lengths, dtype=pl.Int64)
    if s.dtype.is_integer() and (s < 0).any():
        raise ConfigError("lengths: expected non-negative integers")
    pieces, stats = _native.pack_lengths(s, seq_len=seq_len, overlong=overlong,
                                         max_per_row=max_per_row)
    return PackPlan(pieces, PackStats(seq_len=seq_len, **dict(stats)))
