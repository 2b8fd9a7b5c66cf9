"""Helpers of :mod:`sftfast.steps`: the texts a step measures, histograms, report pieces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sftfast.exceptions import ConfigError, SchemaError

if TYPE_CHECKING:
    from sftfast.steps import StepContext

ID = "sft_id"
REASON = "sft_drop_reason"
Bounds = tuple[int | None, int | None]
# Rows per batch where a step feeds a Python loop.
BATCH_ROWS = 65_536
# Rows per row group of the step files (a batch is four): Polars' Parquet sink holds about ten
# row groups in flight, so a streaming read into rows.parquet peaks at 0.6 GB with these and
# 1.3 GB with 65,536-row groups (1M rows of the pipeline benchmark).
ROW_GROUP_ROWS = BATCH_ROWS // 4


def _counts(frame: pl.LazyFrame | pl.DataFrame, column: str = REASON) -> dict[str, int]:
    df = frame.lazy().group_by(column).len().sort(column).collect()
    return {str(r): int(n) for r, n in zip(df[column], df["len"]) if r is not None}


# The pipeline's ``compression`` option → Polars' Parquet codec for the step files.
CODECS = {"none": "uncompressed", "lz4": "lz4", "zstd": "zstd"}


def _sink(lf: pl.LazyFrame, path: Path, compression: str = "none") -> None:
    lf.sink_parquet(path, engine="streaming", compression=CODECS[compression],
                    row_group_size=ROW_GROUP_ROWS)


# The same codecs for Arrow IPC step files (the rendered tokens).
IPC_CODECS = {"none": None, "lz4": "lz4", "zstd": "zstd"}


def _sink_ipc(lf: pl.LazyFrame, path: Path, compression: str = "none") -> None:
    lf.sink_ipc(path, engine="streaming", compression=IPC_CODECS[compression])


def scan_step_file(path: Path) -> pl.LazyFrame:
    """A step file: Arrow IPC (``.arrow``) or Parquet."""
    return pl.scan_ipc(path) if path.suffix == ".arrow" else pl.scan_parquet(path)


def step_slices(path: Path, batch_rows: int | None = None
                   ) -> Iterator[tuple[int, int, pl.LazyFrame]]:
    """``(start, stop, slice)`` of ``path``, ``batch_rows`` rows each, for a consumer slower than the
    reader (MinHash, the shard writer). Each slice is collected on its own, so memory stays one
    batch: a streaming query that feeds a slow Python loop reads gigabytes ahead of it
    (pola-rs/polars#26432). Slices are whole row groups of the files :func:`_sink` writes.
    Arrow IPC files (``.arrow``) are sliced the same way (the reader maps the file and touches
    only the record batches of the slice)."""
    batch_rows = batch_rows or BATCH_ROWS
    n = scan_step_file(path).select(pl.len()).collect().item()
    for start in range(0, n, batch_rows):
        yield start, min(n, start + batch_rows), scan_step_file(path).slice(start, batch_rows)


def _jsonable(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def _turns(assistant: bool) -> pl.Expr:
    role = pl.element().struct.field("role")
    keep = role == "assistant" if assistant else role != "assistant"
    return pl.col("messages").list.eval(
        pl.element().filter(keep).struct.field("content")).list.join("\n")


def conversation_text(schema: pl.Schema, text: str | list[str]) -> pl.Expr:
    """The text a step measures: ``"conversation"`` (system and every turn), ``"prompt"``
    (system and non-assistant turns), ``"response"`` (assistant turns) or string columns."""
    if text in ("prompt", "response", "conversation"):
        if "messages" not in schema:
            raise SchemaError(f"text {text!r}: no 'messages' column; columns: {schema.names()}")
        system = pl.col("system") if "system" in schema else pl.lit(None, pl.String)
        turns = pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n")
        if text == "response":
            return _turns(assistant=True)
        body = _turns(assistant=False) if text == "prompt" else turns
        return pl.concat_str([system, body], separator="\n", ignore_nulls=True)
    cols = [text] if isinstance(text, str) else list(text)
    for c in cols:
        if c not in schema or schema[c] != pl.String:
            raise SchemaError(f"text: {c!r} is not a string column; columns: {schema.names()}")
    return pl.concat_str([pl.col(c) for c in cols], separator="\n", ignore_nulls=True)


def _bounds(name: str, v: Any) -> Bounds:
    if v is None:
        return (None, None)
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(x is None or (isinstance(x, int) and x >= 0) for x in v)):
        raise ConfigError(f"length_filter.{name}: expected [min, max] (ints >= 0 or null), "
                          f"got {v!r}")
    lo, hi = v
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"length_filter.{name}: min {lo} > max {hi}")
    return (lo, hi)


def _edges(top: int) -> list[int]:
    """Bin edges: 0, then powers of two split in four (log-spaced), up to past ``top``."""
    edges = [0, 1, 2, 3, 4, 6, 8]
    while edges[-1] <= top:
        b = edges[-1]
        edges += [b + b // 4, b + b // 2, b + 3 * b // 4, 2 * b]
    return edges


def _histograms(m: pl.LazyFrame, top: int) -> dict[str, Any]:
    import numpy as np

    edges = _edges(top)
    df = (m.group_by("n_total").agg(pl.len().alias("all"),
                                     pl.col(REASON).is_null().sum().alias("kept"))
          .drop_nulls("n_total").collect())
    # One group per distinct length (a few thousand at most), binned here.
    idx = np.searchsorted(np.asarray(edges), df["n_total"].to_numpy(), side="right") - 1
    nb = len(edges) - 1
    before = np.bincount(idx, weights=df["all"].to_numpy(), minlength=nb)[:nb]
    after = np.bincount(idx, weights=df["kept"].to_numpy(), minlength=nb)[:nb]
    return {"edges": edges, "series": {"before filter": [int(x) for x in before],
                                       "after filter": [int(x) for x in after]}}


def _s_curve(bands: tuple[int, ...]) -> list[list[float]]:
    """P(a pair of Jaccard j shares a band) = 1 - prod_b (1 - j^r_b)."""
    out = []
    for i in range(21):
        j = i / 20
        miss = 1.0
        for r in bands:
            miss *= 1.0 - j ** r
        out.append([j, round(1.0 - miss, 6)])
    return out


def _examples(ctx: StepContext, marked: pl.DataFrame, top: pl.DataFrame,
              text: str | list[str]) -> list[dict[str, Any]]:
    if top.height == 0 or ctx.rows is None:
        return []
    members = marked.filter(pl.col("cluster").is_in(top["cluster"].implode()))
    lf = pl.scan_parquet(ctx.rows)
    texts = (lf.filter(pl.col(ID).is_in(members[ID].implode()))
             .select(ID, conversation_text(lf.collect_schema(), text).alias("text")).collect())
    rows = members.join(texts, on=ID, how="left").sort(ID)
    out = []
    for cluster, size in top.iter_rows():
        part = rows.filter(pl.col("cluster") == cluster).head(6)
        out.append({"cluster": int(cluster), "size": int(size), "rows": part[ID].to_list(),
                    "kept": int(part["rep"][0]), "texts": part["text"].to_list()})
    return out


def _row_fill(m: Any) -> dict[str, list[int]]:
    """Histogram of tokens per packed row (from each shard's ``row_offsets.npy``)."""
    import numpy as np

    step = max(1, m.seq_len // 32)
    edges = list(range(0, m.seq_len + step, step))
    if edges[-1] < m.seq_len:
        edges.append(m.seq_len)
    edges[-1] += 1  # the last bin holds full rows
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for sh in m.shards:
        off = np.load(m.path / sh.name / "row_offsets.npy", mmap_mode="r")
        counts += np.histogram(np.diff(off), bins=edges)[0]
    edges[-1] -= 1
    return {"edges": edges, "counts": [int(c) for c in counts]}



def _length_reason(bounds: dict[str, Bounds], total: pl.Expr, max_total: int | None,
                   drop_empty: bool) -> pl.Expr:
    """The first failing check per row, in the order of :func:`sftfast.length_reason`, over
    columns ``t_<field>`` (text) and ``n_<field>`` (token count); null when the row passes."""
    checks: list[tuple[pl.Expr, str]] = []
    for k, (lo, hi) in bounds.items():
        n = pl.col(f"n_{k}")
        checks.append((pl.col(f"t_{k}").is_null(), f"null:{k}"))
        if drop_empty:
            checks.append((pl.col(f"t_{k}").str.strip_chars().str.len_bytes() == 0,
                           f"empty:{k}"))
        if lo is not None:
            checks.append((n < lo, f"too_short:{k}"))
        if hi is not None:
            checks.append((n > hi, f"too_long:{k}"))
    if max_total is not None:
        checks.append((total > max_total, "too_long:total"))
    if not checks:
        return pl.lit(None, pl.String)
    # The first failing check wins; coalesce is ~20x faster than a nested when/then chain.
    return pl.coalesce([pl.when(cond).then(pl.lit(label)) for cond, label in checks])
