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
from typing import Any

import numpy as np
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


def scan_jsonl(path: str | Path, *, block_bytes: int = 32 << 20) -> pl.LazyFrame:
    r"""Scan a JSON Lines file with memory bounded by ``block_bytes``, not by the file size.

    ``pl.scan_ndjson`` memory-maps the whole file, so its resident set grows with the file
    (file-backed pages). This source first runs the native scan over the whole file (it
    validates every line and infers the schema by Polars' rules, columns in order of first
    appearance, so a field that first appears late is not lost), then parses blocks of whole
    lines straight into Arrow columns as the streaming engine pulls them. Where the rows mix
    types that Polars coerces (an int here, a string there), Polars infers the schema over the
    whole file and parses the blocks. A line that is not a JSON object raises
    :class:`InputError` naming it (:func:`sftfast.read` sets such lines aside instead).

    >>> import sftfast, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": "x"}\n{"a": "y", "b": 1}\n')
    >>> sftfast.scan_jsonl(p).collect().to_dicts()
    [{'a': 'x', 'b': None}, {'a': 'y', 'b': 1}]
    """
    path = Path(path)
    if not isinstance(block_bytes, int) or isinstance(block_bytes, bool) or block_bytes < 1:
        raise InputError(f"block_bytes: expected a positive int, got {block_bytes!r}")
    problems, _, jtype = _problems(path)
    if problems:
        raise InputError(f"{path}: line {problems[0][0]}: {problems[0][1]} (sftfast.read sets "
                         f"such lines aside with their reason)")
    return _stream(path, jtype, block_bytes)


def _problems(path: Path) -> tuple[list[tuple[int, str]], np.ndarray, Any]:
    """The native scan of ``path``: its bad and non-object lines ``(line, reason)`` in order,
    the 0-based lines that are not rows (those and blank lines), and the type of its object
    lines (None: types Polars coerces)."""
    bad, blank, odd, _, jtype = _native.scan_jsonl(str(path))
    problems = sorted([*bad, *((line, "not_an_object") for line in odd)])
    skipped = np.unique(np.asarray([*blank, *(ln for ln, _ in problems)], np.int64)) - 1
    return problems, skipped, jtype


def _stream(path: Path, jtype: Any, block_bytes: int = 32 << 20) -> pl.LazyFrame:
    """The object lines of ``path`` (all its non-blank lines), in blocks."""
    from sftfast._formats import _blocks, _jsonl_stream

    if jtype is not None:  # a struct, or ("null",) when there is no object line
        return _jsonl_stream(path, jtype, block_bytes) if jtype[0] == "struct" else pl.LazyFrame()
    schema = pl.scan_ndjson(path, infer_schema_length=None).collect_schema()

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        left = n_rows
        for _, block in _blocks(path, block_bytes):
            if block.isspace():
                continue
            df = pl.read_ndjson(io.BytesIO(block), schema=schema)
            if with_columns is not None:
                df = df.select(with_columns) if with_columns else df.drop(df.columns)
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
        # Validate eagerly so a bad line deep in the file is caught before a long run starts;
        # the same scan gives the schema of the good lines. Rows are numbered by physical line
        # (0-based), as the lines set aside are.
        problems, skipped, jtype = _problems(path)
        if not problems:
            return _numbered(_stream(path, jtype), skipped)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot read as {kind}: {exc}") from exc
    line, reason = problems[0]
    if strict:
        raise InputError(f"{path}: line {line}: {reason}")
    if result.tempdir is None:
        result.tempdir = tempfile.TemporaryDirectory(prefix="sftfast-")
    clean = Path(result.tempdir.name) / f"{len(result.bad_rows)}-{path.name}.jsonl"
    _native.scan_jsonl(str(path), str(clean))  # the object lines only
    result.bad_rows.extend(BadRow(str(path), ln, why) for ln, why in problems)
    return _numbered(_stream(clean, jtype), skipped)


def _numbered(lf: pl.LazyFrame, skipped: np.ndarray) -> pl.LazyFrame:
    from sftfast._formats import physical_rows

    return physical_rows(lf, skipped).with_columns(pl.col(ROW).cast(pl.UInt32))


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
        if ROW not in lf.collect_schema():  # (JSON Lines come numbered by physical line)
            lf = lf.with_row_index(ROW)
        frames.append(lf.with_columns(pl.lit(str(p)).alias(SOURCE)))
    result.frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    return result
