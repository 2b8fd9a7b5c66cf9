"""sftfast.pack_lengths: every token placed once, rows within seq_len, policies, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sftfast
from sftfast import ConfigError


def lognormal(n: int, seed: int = 0) -> pl.Series:
    rng = np.random.default_rng(seed)
    return pl.Series("len", np.clip(rng.lognormal(np.log(350), 0.8, n), 1, 8192).astype(np.int64))


@pytest.mark.parametrize("seq_len", [2048, 4096, 8192])
def test_efficiency_on_a_realistic_distribution(seq_len: int) -> None:
    lengths = lognormal(200_000)
    plan = sftfast.pack_lengths(lengths, seq_len=seq_len)
    assert plan.stats.efficiency > 0.999
    per_row = plan.pieces.group_by("row").agg(pl.col("len").sum())["len"]
    assert per_row.max() <= seq_len
    again = sftfast.pack_lengths(lengths, seq_len=seq_len)
    assert again.pieces.equals(plan.pieces)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), max_size=200),
    seq_len=st.integers(1, 256),
    overlong=st.sampled_from(["drop", "truncate_right", "truncate_left", "split"]),
    cap=st.one_of(st.none(), st.integers(1, 5)),
)
def test_invariants(lengths: list[int], seq_len: int, overlong: str, cap: int | None) -> None:
    plan = sftfast.pack_lengths(lengths, seq_len=seq_len, overlong=overlong, max_per_row=cap)
    p = plan.pieces
    rows = p.group_by("row").agg(pl.col("len").sum().alias("t"), pl.len().alias("n"))
    assert rows.height == plan.stats.rows
    if rows.height:
        assert rows["t"].max() <= seq_len  # a row stays within seq_len
        if cap is not None:
            assert rows["n"].max() <= cap
    placed = dict(p.group_by("sample").agg(pl.col("len").sum()).iter_rows())
    lost = 0
    for i, n in enumerate(lengths):
        got = placed.get(i, 0)
        if n <= seq_len or overlong == "split":
            assert got == n  # every token placed exactly once
        elif overlong == "drop":
            assert got == 0
            lost += n
        else:
            assert got == seq_len
            lost += n - seq_len
    assert plan.stats.tokens_lost == lost
    assert plan.stats.tokens_packed == p["len"].sum()


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="overlong"):
        sftfast.pack_lengths([1], seq_len=8, overlong="wrap")
    with pytest.raises(ConfigError, match="seq_len"):
        sftfast.pack_lengths([1], seq_len=0)
    with pytest.raises(ConfigError, match="non-negative"):
        sftfast.pack_lengths([-1], seq_len=8)
