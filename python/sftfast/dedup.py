"""Exact and near-duplicate removal (MinHash-LSH), with the heavy work in Rust.

>>> import polars as pl, sftfast
>>> base = " ".join(f"word{i}" for i in range(60))
>>> df = pl.DataFrame({"text": [base, "something else entirely", base + " plus", None]})
>>> res = sftfast.near_dedup(df, text_column="text", threshold=0.8)
>>> res.frame["is_duplicate"].to_list()
[False, False, True, False]
>>> res.frame["dup_cluster"].to_list()
[0, 1, 0, 3]
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import polars as pl

from sftfast import _native
from sftfast.exceptions import ConfigError, SchemaError
from sftfast.expr import _plugin

__all__ = ["DedupStats", "ExactDedupResult", "NearDedupResult", "exact_dedup", "minhash",
           "near_dedup"]

CLUSTER, DUPLICATE, REPRESENTATIVE = "dup_cluster", "is_duplicate", "dup_representative"
KEEP_POLICIES = ("first", "longest", "score")


@dataclass(frozen=True)
class DedupStats:
    """What near-dedup found: ``rows == kept + duplicates``."""

    rows: int
    rows_without_tokens: int
    candidate_edges: int
    edges_rejected: int
    clusters: int
    duplicates: int
    largest_bucket: int
    rows_per_band: tuple[int, ...]

    @property
    def kept(self) -> int:
        return self.rows - self.duplicates

    def summary(self) -> str:
        bands = self.rows_per_band
        lines = [f"{f.name:<20} {getattr(self, f.name):>12,}" for f in fields(self)
                 if f.name != "rows_per_band"]
        lines.append(f"{'bands x rows':<20} {len(bands):>5} x {bands[-1] if bands else 0}"
                     + (f" (+1 row in the first {sum(1 for r in bands if r > bands[-1])})"
                        if bands and bands[0] > bands[-1] else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class NearDedupResult:
    """The input with ``dup_cluster`` (smallest row of the cluster), ``is_duplicate`` and
    ``dup_representative`` (the row kept for the cluster), plus stats."""

    frame: pl.DataFrame | pl.LazyFrame
    stats: DedupStats
    cluster: pl.Series
    representative: pl.Series

    @property
    def keep(self) -> pl.Series:
        """True for rows to keep."""
        return (self.representative == pl.int_range(len(self.representative), eager=True)
                .cast(pl.UInt32)).alias("keep")

    def sample_clusters(self, n: int = 5, *, texts: pl.Series | None = None) -> pl.DataFrame:
        """The ``n`` largest clusters (ties: smallest id): cluster, size, rows and, when
        ``texts`` is given, the texts side by side."""
        df = pl.DataFrame({CLUSTER: self.cluster, "row": pl.int_range(len(self.cluster),
                                                                       eager=True)})
        if texts is not None:
            df = df.with_columns(text=texts)
        agg = [pl.len().alias("size"), pl.col("row")]
        if texts is not None:
            agg.append(pl.col("text"))
        return (df.group_by(CLUSTER).agg(agg).filter(pl.col("size") > 1)
                .sort(["size", CLUSTER], descending=[True, False]).head(n))


def _text_expr(schema: pl.Schema, text_column: str | Sequence[str]) -> pl.Expr:
    cols = [text_column] if isinstance(text_column, str) else list(text_column)
    if not cols:
        raise ConfigError("text_column: expected a column name or a list of them")
    for c in cols:
        if c not in schema:
            raise SchemaError(f"text_column: {c!r} not in the data; columns are {list(schema)}")
        if schema[c] != pl.String:
            raise SchemaError(f"text_column: {c!r} must hold strings, got {schema[c]}")
    if len(cols) == 1:
        return pl.col(cols[0])
    return pl.concat_str([pl.col(c) for c in cols], separator="\n", ignore_nulls=True)


def near_dedup(
    frame: pl.DataFrame | pl.LazyFrame,
    text_column: str | Sequence[str] = "text",
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    num_bands: int | None = None,
    seed: int = 0,
    verify_threshold: float | None = None,
    keep: str = "first",
    score_column: str | None = None,
    nfkc: bool = True,
    lowercase: bool = True,
    batch_rows: int = 500_000,
    spill: bool | str | os.PathLike[str] = False,
) -> NearDedupResult:
    """Mark near-duplicate rows with MinHash-LSH and union-find clusters.

    Parameters
    ----------
    frame
        The rows; a LazyFrame is read in batches of ``batch_rows`` (memory per row while
        reading: 8 bytes per band + 8, plus 4 per permutation with ``verify_threshold``).
    text_column
        The text, or several columns joined with newlines (e.g. prompt and answer).
    threshold
        Jaccard similarity of shingle sets from which rows are duplicates; chooses the bands.
    num_perm, ngram, num_bands, seed
        Permutations, tokens per shingle (words; single characters for CJK), bands (default:
        chosen from ``threshold``, every permutation used) and the permutation seed.
    verify_threshold
        Keep a candidate pair only if its signatures' estimated Jaccard reaches this.
    keep
        Which row of a cluster stays: ``first`` (smallest row), ``longest`` (most bytes) or
        ``score`` (highest ``score_column``); ties go to the smaller row.
    nfkc, lowercase
        Normalisation before tokens are taken (punctuation and whitespace never count).
    spill
        Keep the band keys in files instead of memory: a folder (the run writes a subfolder
        of its own there and removes it), or ``True`` for a temporary one. Memory per row then
        drops to 9 bytes while reading (plus signatures with ``verify_threshold``) and 48 for
        the two bands sorted at a time.

    Returns
    -------
    NearDedupResult
        ``frame`` with ``dup_cluster``, ``is_duplicate`` and ``dup_representative``;
        ``frame.filter(~pl.col("is_duplicate"))`` keeps one row per cluster.
    """
    _check_near(keep, score_column, batch_rows, seed)
    lazy = isinstance(frame, pl.LazyFrame)
    lf: pl.LazyFrame = frame if isinstance(frame, pl.LazyFrame) else frame.lazy()
    schema = lf.collect_schema()
    text = _text_expr(schema, text_column).alias("text")
    if score_column is not None and score_column not in schema:
        raise SchemaError(f"score_column: {score_column!r} not in the data")
    with contextlib.ExitStack() as stack:
        spill_dir = None
        if spill is True:
            spill_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sftfast-dedup-"))
        elif spill:
            spill_dir = os.fspath(spill)
            os.makedirs(spill_dir, exist_ok=True)
        return _near_dedup(frame, lf, lazy, text, threshold, num_perm, ngram, num_bands, seed,
                           verify_threshold, keep, score_column, nfkc, lowercase, batch_rows,
                           spill_dir)


def _check_near(keep: str, score_column: str | None, batch_rows: int, seed: int) -> None:
    if keep not in KEEP_POLICIES:
        raise ConfigError(f"keep: expected one of {KEEP_POLICIES}, got {keep!r}")
    if (keep == "score") != (score_column is not None):
        raise ConfigError("keep='score' and score_column go together")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows: expected an int >= 1, got {batch_rows!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed: expected an int in [0, 2**64), got {seed!r}")


def _near_dedup_batches(batches: Iterable[pl.DataFrame], *, threshold: float, num_perm: int,
                        ngram: int, num_bands: int | None, seed: int,
                        verify_threshold: float | None, keep: str, score_column: str | None,
                        nfkc: bool = True, lowercase: bool = True,
                        spill_dir: str | None = None) -> tuple[pl.DataFrame, DedupStats]:
    """:func:`near_dedup` over batches that hold a ``text`` column (and ``score_column``):
    ``cluster`` and ``representative`` per row, and the stats. The caller owns the reading, so
    it can bound how far ahead it reads."""
    _check_near(keep, score_column, 1, seed)
    state = _native.NearDedup(num_perm=num_perm, ngram=ngram, threshold=float(threshold),
                              seed=seed, num_bands=num_bands,
                              verify_threshold=None if verify_threshold is None
                              else float(verify_threshold), nfkc=nfkc, lowercase=lowercase,
                              spill_dir=spill_dir)
    scores: list[pl.Series] = []
    for batch in batches:
        state.add(batch["text"])
        if score_column is not None:
            scores.append(batch[score_column].cast(pl.Float64))
    out, stats, rows_per_band = state.finish(
        keep, None if score_column is None else pl.concat(scores) if scores
        else pl.Series(score_column, [], pl.Float64))
    return out, DedupStats(**dict(stats), rows_per_band=tuple(rows_per_band))


def _near_dedup(frame: pl.DataFrame | pl.LazyFrame, lf: pl.LazyFrame, lazy: bool, text: pl.Expr,
                threshold: float, num_perm: int, ngram: int, num_bands: int | None, seed: int,
                verify_threshold: float | None, keep: str, score_column: str | None, nfkc: bool,
                lowercase: bool, batch_rows: int, spill_dir: str | None) -> NearDedupResult:
    src = lf.select(text) if score_column is None else lf.select(text, pl.col(score_column))
    batches: Iterable[pl.DataFrame] = (
        src.collect_batches(chunk_size=batch_rows) if lazy
        else src.collect().rechunk().iter_slices(batch_rows))
    out, stats = _near_dedup_batches(
        batches, threshold=threshold, num_perm=num_perm, ngram=ngram, num_bands=num_bands,
        seed=seed, verify_threshold=verify_threshold, keep=keep, score_column=score_column,
        nfkc=nfkc, lowercase=lowercase, spill_dir=spill_dir)
    row = pl.int_range(pl.len(), dtype=pl.UInt32)
    cols = out.select(
        pl.col("cluster").alias(CLUSTER),
        (pl.col("representative") != row).alias(DUPLICATE),
        pl.col("representative").alias(REPRESENTATIVE),
    )
    result: pl.DataFrame | pl.LazyFrame
    if isinstance(frame, pl.DataFrame):
        result = pl.concat([frame, cols], how="horizontal")
    else:
        result = pl.concat([lf, cols.lazy()], how="horizontal")
    return NearDedupResult(
        frame=result,
        stats=stats,
        cluster=out["cluster"],
        representative=out["representative"],
    )


@dataclass(frozen=True)
class ExactDedupResult:
    """The input with ``is_duplicate`` (a later copy of an earlier row's normalised text)."""

    frame: pl.DataFrame | pl.LazyFrame
    rows: int | None
    duplicates: int | None


def exact_key(
    columns: str | pl.Expr | Sequence[str | pl.Expr],
    *,
    nfkc: bool = True,
    lowercase: bool = True,
    fold_whitespace: bool = True,
    fold_punctuation: bool = True,
    bits: int = 64,
) -> pl.Expr:
    """The exact-dedup key of each row over ``columns`` after normalisation (xxh3; UInt64, or a
    16-byte Binary with ``bits=128``). Row-local, so it streams."""
    if bits not in (64, 128):
        raise ConfigError(f"bits: expected 64 or 128, got {bits!r}")
    cols = [columns] if isinstance(columns, (str, pl.Expr)) else list(columns)
    if not cols:
        raise ConfigError("columns: expected at least one column")
    kwargs = dict(nfkc=nfkc, lowercase=lowercase, fold_whitespace=fold_whitespace,
                  fold_punctuation=fold_punctuation, bits=bits)
    exprs = [pl.col(c) if isinstance(c, str) else c for c in cols]
    return _plugin("exact_key", exprs, kwargs, elementwise=True)


def exact_dedup(
    frame: pl.DataFrame | pl.LazyFrame,
    columns: str | Sequence[str] = "text",
    **options: Any,
) -> ExactDedupResult:
    """Mark rows whose normalised ``columns`` equal an earlier row's (see :func:`exact_key`
    for the options). A DataFrame gets counts; a LazyFrame stays lazy (counts ``None``).

    >>> import polars as pl, sftfast
    >>> df = pl.DataFrame({"q": ["Hi there!", "hi   THERE", "Bye"]})
    >>> sftfast.exact_dedup(df, "q").frame["is_duplicate"].to_list()
    [False, True, False]
    """
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    schema = lf.collect_schema()
    for c in [columns] if isinstance(columns, str) else columns:
        if c not in schema:
            raise SchemaError(f"columns: {c!r} not in the data; columns are {list(schema)}")
        if schema[c] != pl.String:
            raise SchemaError(f"columns: {c!r} must hold strings, got {schema[c]}")
    marked = lf.with_columns((~exact_key(columns, **options).is_first_distinct()).alias(DUPLICATE))
    if isinstance(frame, pl.DataFrame):
        df = marked.collect()
        return ExactDedupResult(df, df.height, int(df[DUPLICATE].sum()))
    return ExactDedupResult(marked, None, None)


def minhash(expr: pl.Expr | str, *, num_perm: int = 128, ngram: int = 5, seed: int = 0,
            nfkc: bool = True, lowercase: bool = True) -> pl.Expr:
    """MinHash signature of each text: a list of ``num_perm`` UInt32 (row-local, streams).

    >>> import polars as pl, sftfast
    >>> s = pl.select(sftfast.minhash(pl.lit("a b c d e f"), num_perm=4)).to_series()
    >>> s.list.len().item()
    4
    """
    e = pl.col(expr) if isinstance(expr, str) else expr
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    kwargs = dict(num_perm=num_perm, ngram=ngram, seed=seed - 2**64 if seed >= 2**63 else seed,
                  nfkc=nfkc, lowercase=lowercase)
    return _plugin("minhash", [e], kwargs, elementwise=True)
