"""Reading input files into LazyFrames: JSON Lines, JSON arrays, Parquet, CSV.

Broken JSON Lines rows never stop a run: the file is re-read through a native validator that
sets the bad lines aside with their line number and reason (``strict=True`` raises on the
first one instead). Every frame gets ``sft_source`` (file) and ``sft_row`` (0-based row in it).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from sftfast import _native
from sftfast.exceptions import InputError

__all__ = ["BadRow", "ScanResult", "scan_inputs", "scan_jsonl"]

SOURCE = "sft_source"
ROW = "sft_row"


@dataclass(frozen=True)
class BadRow:
    """An input line that could not be parsed."""

    source: str
    line: int
    reason: str


@dataclass
class ScanResult:
    """The readable rows as one LazyFrame, plus the lines set aside."""

    frame: pl.LazyFrame
    bad_rows: list[BadRow] = field(default_factory=list)
    tempdir: tempfile.TemporaryDirectory[str] | None = None


def _blocks(path: Path, block_bytes: int) -> Iterator[bytes]:
    """Whole lines of ``path`` in blocks of about ``block_bytes`` (one block in memory)."""
    with path.open("rb") as fh:
        tail = b""
        while chunk := fh.read(block_bytes):
            buf = tail + chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                tail = buf
                continue
            tail = buf[cut:]
            yield buf[:cut]
        if tail.strip():
            yield tail


def scan_jsonl(
    path: str | Path, *, block_bytes: int = 32 << 20, infer_schema_bytes: int = 8 << 20
) -> pl.LazyFrame:
    r"""Scan a JSON Lines file with memory bounded by ``block_bytes``, not by the file size.

    ``pl.scan_ndjson`` memory-maps the whole file, so its resident set grows with the file
    (file-backed pages). This source reads blocks of whole lines, parses each with Polars and
    hands the frames to the streaming engine. The schema is inferred from the first
    ``infer_schema_bytes`` of the file; later rows are read with it (missing fields are null).

    >>> import sftfast, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": "x"}\n{"a": "y", "b": 1}\n')
    >>> sftfast.scan_jsonl(p).collect().to_dicts()
    [{'a': 'x', 'b': None}, {'a': 'y', 'b': 1}]
    """
    path = Path(path)
    head = next(_blocks(path, infer_schema_bytes), b"")
    schema = pl.read_ndjson(io.BytesIO(head), infer_schema_length=None).schema if head else {}

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        left = n_rows
        for block in _blocks(path, block_bytes):
            df = pl.read_ndjson(io.BytesIO(block), schema=schema)
            if with_columns is not None:
                df = df.select(with_columns)
            if predicate is not None:
                df = df.filter(predicate)
            if left is not None:
                df = df.head(left)
                left -= df.height
            yield df
            if left is not None and left <= 0:
                return

    return register_io_source(source, schema=schema)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip()
        return "json" if head.startswith(b"[") else "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise InputError(f"{path}: unsupported file type {suffix!r} (jsonl, json, parquet, csv)")


def _scan_one(path: Path, kind: str, *, strict: bool, result: ScanResult) -> pl.LazyFrame:
    try:
        if kind == "parquet":
            return pl.scan_parquet(path)
        if kind == "csv":
            return pl.scan_csv(path, separator="\t" if path.suffix == ".tsv" else ",")
        if kind == "json":
            return pl.read_json(path, infer_schema_length=None).lazy()
        # Validate eagerly so a bad line deep in the file is caught before a long run starts.
        bad = _native.split_jsonl(str(path))
        if not bad:
            return scan_jsonl(path)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot read as {kind}: {exc}") from exc
    line, reason = bad[0]
    if strict:
        raise InputError(f"{path}: line {line}: {reason}")
    if result.tempdir is None:
        result.tempdir = tempfile.TemporaryDirectory(prefix="sftfast-")
    clean = Path(result.tempdir.name) / f"{len(result.bad_rows)}-{path.name}.jsonl"
    bad = _native.split_jsonl(str(path), str(clean))
    result.bad_rows.extend(BadRow(str(path), ln, why) for ln, why in bad)
    return scan_jsonl(clean)


def scan_inputs(paths: list[str | Path], *, strict: bool = False) -> ScanResult:
    """Scan files into one LazyFrame with ``sft_source`` and ``sft_row`` columns.

    Columns missing from some files are filled with nulls; types are relaxed to a common one.
    """
    if not paths:
        raise InputError("no input files given")
    result = ScanResult(frame=pl.LazyFrame())
    frames = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        lf = _scan_one(p, _kind(p), strict=strict, result=result)
        frames.append(lf.with_row_index(ROW).with_columns(pl.lit(str(p)).alias(SOURCE)))
    result.frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    return result
