"""Packed token shards: write them from token columns, read their manifest, export Parquet.

The packing and the writing run in Rust (``rust/src/shard``); the format is documented there and
in the README: per shard, five ``.npy`` files that ``numpy.load(..., mmap_mode="r")`` reads
without sftfast, and a ``manifest.json`` with counts and checksums, written last.

>>> import polars as pl, sftfast, tempfile, numpy as np
>>> df = pl.DataFrame({"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]],
...                    "labels": [[-100, 2, 3], [-100, 5], [-100, -100, 8, 9]]})
>>> out = tempfile.mkdtemp()
>>> m = sftfast.write_shards(df, out, seq_len=8)
>>> m.rows, m.tokens, m.loss_tokens, m.packing.efficiency
(2, 9, 5, 0.5625)
>>> ids = np.load(f"{out}/shard-00000/input_ids.npy", mmap_mode="r")
>>> int(ids.size)
9
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
from sftfast.exceptions import ConfigError, SchemaError
from sftfast.pack import OVERLONG

__all__ = [
    "PackingInfo",
    "ShardInfo",
    "ShardManifest",
    "export_parquet",
    "read_manifest",
    "write_shards",
]

PACKING = ("bfd", "window")


@dataclass(frozen=True)
class PackingInfo:
    """How rows were packed: method, policy and the counts of what was dropped or cut."""

    method: str
    window: int | None
    overlong: str
    max_per_row: int | None
    input_samples: int
    dropped: int
    truncated: int
    tokens_lost: int
    efficiency: float


@dataclass(frozen=True)
class ShardInfo:
    """One shard: folder name, counts and per-file size and xxh3-64."""

    name: str
    rows: int
    samples: int
    tokens: int
    files: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ShardManifest:
    """A dataset's ``manifest.json``."""

    path: Path
    format: str
    version: int
    seq_len: int
    rows: int
    samples: int
    tokens: int
    loss_tokens: int
    packing: PackingInfo
    tokenizer_hash: str | None
    config_fingerprint: str | None
    created_by: str
    shards: tuple[ShardInfo, ...]

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], text: str) -> ShardManifest:
        d = json.loads(text)
        d["packing"] = PackingInfo(**d["packing"])
        d["shards"] = tuple(ShardInfo(**s) for s in d["shards"])
        return cls(path=Path(path), **d)


def read_manifest(path: str | os.PathLike[str], *, verify: bool = False) -> ShardManifest:
    """Open a dataset and check it (sizes, counts, offsets; checksums with ``verify``).

    Raises ``ShardError`` when the folder is not a finished dataset or a shard does not match
    its manifest.
    """
    reader = _native.ShardReader(os.fspath(path), verify=verify)
    return ShardManifest.from_json(path, reader.manifest_json())


def _check_int(name: str, v: object, lo: int, hi: int = 2**63) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise ConfigError(f"{name}: expected an int in [{lo}, {hi}), got {v!r}")


def write_shards(
    frame: pl.DataFrame | pl.LazyFrame | Iterable[pl.DataFrame],
    out: str | os.PathLike[str],
    *,
    seq_len: int,
    input_ids: str = "input_ids",
    labels: str | None = "labels",
    packing: str = "bfd",
    window: int = 10_000,
    overlong: str = "truncate_right",
    max_per_row: int | None = None,
    shard_tokens: int = 1 << 24,
    seed: int = 0,
    tokenizer: object | None = None,
    config_fingerprint: str | None = None,
    overwrite: bool = False,
    batch_rows: int = 65_536,
) -> ShardManifest:
    """Pack samples into rows of ``seq_len`` tokens and write them as shards in ``out``.

    Parameters
    ----------
    frame
        One sample per row: ``input_ids`` (list of token ids) and, unless ``labels=None``,
        ``labels`` of the same length (−100 = not learned). A LazyFrame is read in batches;
        an iterable of DataFrames is taken as the batches as they come (your own reader, which
        decides how far ahead it reads; ``batch_rows`` does not apply).
    packing
        ``"bfd"``: global best-fit-decreasing over all lengths (tokens wait in a temporary
        store in ``out``, 8 bytes per token on disk, ~28 bytes per sample in memory; rows are
        put in a seeded order so shards mix long and short samples). ``"window"``: streaming
        best-fit over ``window`` samples, bounded memory for any stream length; shards are
        written as rows close.
    overlong
        Samples longer than ``seq_len``: ``drop``, ``truncate_right``, ``truncate_left`` or
        ``split``. Counted in ``manifest.packing``.
    max_per_row
        Cap on samples per packed row.
    shard_tokens
        A shard ends at the first row boundary past this many tokens.
    tokenizer, config_fingerprint
        Recorded in the manifest (the tokenizer's content hash).
    overwrite
        Replace a dataset already in ``out`` (its manifest is removed first).

    Returns
    -------
    ShardManifest
        Counts, packing efficiency and truncation losses, and the shards with checksums.

    Same input and options → byte-identical shards, for any thread count.
    """
    if packing not in PACKING:
        raise ConfigError(f"packing: expected one of {PACKING}, got {packing!r}")
    if overlong not in OVERLONG:
        raise ConfigError(f"overlong: expected one of {OVERLONG}, got {overlong!r}")
    _check_int("seq_len", seq_len, 1, 2**32)
    _check_int("window", window, 1)
    _check_int("shard_tokens", shard_tokens, 1)
    _check_int("seed", seed, 0, 2**64)
    _check_int("batch_rows", batch_rows, 1)
    if max_per_row is not None:
        _check_int("max_per_row", max_per_row, 1, 2**32)
    cols = [input_ids] if labels is None else [input_ids, labels]

    def check(schema: pl.Schema) -> None:
        for c in cols:
            if c not in schema:
                hint = " (pass labels=None to learn every token)" if c == labels else ""
                raise SchemaError(f"column {c!r} not in the data{hint}; "
                                  f"columns: {schema.names()}")

    first: pl.DataFrame | None = None
    rest: Iterator[pl.DataFrame] = iter(())
    if isinstance(frame, pl.LazyFrame):
        check(frame.collect_schema())
    elif isinstance(frame, pl.DataFrame):
        check(frame.schema)
    else:
        # Check the first batch before the writer clears anything (``overwrite``).
        rest = iter(frame)
        first = next(rest, None)
        for b in () if first is None else (first,):
            if not isinstance(b, pl.DataFrame):
                raise SchemaError(f"frame: expected a DataFrame, a LazyFrame or an iterable of "
                                  f"DataFrames, got batches of {type(b).__name__}")
            check(b.schema)
    tok_hash = None
    if tokenizer is not None:
        from sftfast.tokenizer import load_tokenizer

        tok_hash = load_tokenizer(tokenizer).key
    writer = _native.ShardWriter(
        os.fspath(out), seq_len=seq_len, overlong=overlong, max_per_row=max_per_row,
        window=window if packing == "window" else None, shard_tokens=shard_tokens, seed=seed,
        tokenizer_hash=tok_hash, config_fingerprint=config_fingerprint, overwrite=overwrite)
    batches: Iterable[pl.DataFrame]
    if isinstance(frame, pl.LazyFrame):  # started only now that the writer exists
        batches = frame.select(cols).collect_batches(chunk_size=batch_rows)
    elif isinstance(frame, pl.DataFrame):
        batches = frame.select(cols).iter_slices(batch_rows)
    else:
        def checked() -> Iterator[pl.DataFrame]:
            if first is not None:
                yield first
            for b in rest:
                if not isinstance(b, pl.DataFrame):
                    raise SchemaError(f"frame: expected batches of DataFrames, got "
                                      f"{type(b).__name__}")
                check(b.schema)
                yield b

        batches = checked()
    for batch in batches:
        writer.add(batch[input_ids], None if labels is None else batch[labels])
    return ShardManifest.from_json(out, writer.finish())


def export_parquet(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rows_per_file: int = 50_000,
) -> list[Path]:
    """Write a shard dataset as Parquet, one packed row per line, for HF ``datasets`` users.

    Columns: ``input_ids`` (list of u32), ``labels`` (list of i32, as stored), ``seq_lens``
    (the lengths of the samples in the row) and ``sample_ids``. Files ``part-NNNNN.parquet``
    in ``out``; load them with ``datasets.load_dataset("parquet", data_files=...)``.
    """
    _check_int("rows_per_file", rows_per_file, 1)
    reader = _native.ShardReader(os.fspath(path))
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    n = reader.num_rows
    for i, start in enumerate(range(0, max(n, 1), rows_per_file)):
        part = reader.rows_frame(start, min(n, start + rows_per_file))
        f = dest / f"part-{i:05d}.parquet"
        tmp = f.with_suffix(f".tmp-{os.getpid()}")
        part.write_parquet(tmp)
        tmp.replace(f)
        files.append(f)
    return files
