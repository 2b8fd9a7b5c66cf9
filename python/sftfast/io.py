"""Reading input files into LazyFrames: JSON Lines, JSON arrays, Parquet, CSV.

Broken JSON Lines rows never stop a run: the file is re-read through a native validator that
sets the bad lines aside with their line number and reason (``strict=True`` raises on the
first one instead). Every frame gets ``sft_source`` (file) and ``sft_row`` (0-based row in it).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from sftfast import _native
from sftfast.exceptions import InputError

__all__ = ["BadRow", "ScanResult", "scan_inputs"]

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
            return pl.read_json(path).lazy()
        # Validate eagerly so a bad line deep in the file is caught before a long run starts.
        bad = _native.split_jsonl(str(path))
        if not bad:
            return pl.scan_ndjson(path, infer_schema_length=10_000)
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
    return pl.scan_ndjson(clean, infer_schema_length=10_000)


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
