"""One input file → raw rows for :func:`sftfast.read`: decompression, format sniffing, row numbers.

Each loader returns the file's rows as a LazyFrame with their 0-based position in ``sft_row``
(JSON Lines: the physical line; JSON arrays: the element; CSV / Excel / Parquet: the data row),
plus the rows that could not be parsed at all (invalid JSON, a JSON Lines row that is not an
object, a wrapped row that is not a one-element list). Blank lines are not rows.

Per-file work only: sniffing looks at the first bytes, and the JSON Lines pre-pass runs the
native validator and two C-level regex scans that visit only blank or non-object lines.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl

from sftfast import _native
from sftfast.exceptions import InputError

ROW = "sft_row"
FORMATS = ("jsonl", "json", "parquet", "csv", "excel")
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
}
COMPRESSED = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
REJECT_SCHEMA = {"row": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.String}


@dataclass(frozen=True)
class Raw:
    """A file's parseable rows (built on demand) and the rows set aside while parsing."""

    format: str
    schema: pl.Schema
    make: Callable[[Collection[str]], pl.LazyFrame]
    rejects: pl.DataFrame


def optional_module(name: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise an :class:`InputError` saying how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InputError(
            f"{purpose} needs the optional package {name!r}: pip install {name}"
        ) from exc


def _rejects(rows: list[int], reason: str, details: list[str | None] | None = None) -> pl.DataFrame:
    n = len(rows)
    return pl.DataFrame(
        {"row": rows, "reason": [reason] * n, "detail": details or [None] * n, "raw": [None] * n},
        schema=REJECT_SCHEMA,
    )


def _decompress(path: Path, codec: str, workdir: Path) -> Path:
    name = path.name
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    out = workdir / f"{len(list(workdir.iterdir()))}-{name}"
    with path.open("rb") as src, out.open("wb") as dst:
        if codec == "gzip":
            with gzip.open(src) as plain:
                shutil.copyfileobj(plain, dst, 1 << 20)
        else:
            try:  # Python >= 3.14 ships zstd; older ones need the zstandard package.
                zstd = importlib.import_module("compression.zstd")
                with zstd.open(src) as plain:
                    shutil.copyfileobj(plain, dst, 1 << 20)
            except ImportError:
                zstandard = optional_module("zstandard", f"{path}: reading zstd")
                zstandard.ZstdDecompressor().copy_stream(src, dst)
    return out


def plain_file(path: Path, workdir: Callable[[], Path]) -> Path:
    """``path`` itself, or a decompressed copy when its first bytes are gzip or zstd magic."""
    with path.open("rb") as fh:
        head = fh.read(4)
    for magic, codec in _MAGIC.items():
        if head.startswith(magic):
            try:
                return _decompress(path, codec, workdir())
            except (OSError, EOFError) as exc:
                raise InputError(f"{path}: cannot decompress ({codec}): {exc}") from exc
    return path


def sniff(path: Path, shown: Path) -> str:
    """The format of an uncompressed file: suffix first, then its first bytes."""
    name = shown.name.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    kind = SUFFIXES.get(Path(name).suffix)
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    if kind is None:
        if head.startswith(b"PAR1"):
            kind = "parquet"
        elif head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
            kind = "excel"
        elif head.lstrip()[:1] in (b"[", b"{"):
            kind = "json"
        else:
            raise InputError(f"{shown}: unknown file type (expected one of {', '.join(FORMATS)})")
    if kind != "json":
        return kind
    # `.json` is often JSON Lines. A JSON array starts with `[` and its first line is not a
    # complete JSON value by itself, unless the whole array sits on that one line.
    text = head.lstrip()
    if not text.startswith(b"["):
        return "jsonl"
    first, sep, rest = text.partition(b"\n")
    if not sep or not rest.strip():
        return "json"
    try:
        json.loads(first)
    except ValueError:
        return "json"
    return "jsonl"


def load(path: Path, kind: str, shown: Path, workdir: Callable[[], Path]) -> Raw:
    """Open ``path`` (an uncompressed copy of ``shown``) as ``kind``."""
    try:
        if kind == "jsonl":
            return _jsonl(path, shown, workdir)
        if kind == "json":
            return _json_array(path, shown)
        if kind == "parquet":
            lf = pl.scan_parquet(path)
            return Raw(kind, lf.collect_schema(), lambda _: _numbered(lf), _rejects([], ""))
        if kind == "csv":
            return _csv(path)
        return _excel(path, shown)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{shown}: cannot read as {kind}: {exc}") from exc


def _numbered(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def _csv(path: Path) -> Raw:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    schema = pl.scan_csv(path, separator=sep).collect_schema()

    def make(text: Collection[str]) -> pl.LazyFrame:
        # Text the schema consumes stays text ("007" is not 7); an empty cell is "", not null.
        cols = [c for c in text if c in schema]
        lf = pl.scan_csv(path, separator=sep, schema_overrides=dict.fromkeys(cols, pl.String))
        return _numbered(lf.with_columns(pl.col(cols).fill_null("")))

    return Raw("csv", schema, make, _rejects([], ""))


def _excel(path: Path, shown: Path) -> Raw:
    optional_module("fastexcel", f"{shown}: reading Excel")
    opts = {"drop_empty_rows": False, "drop_empty_cols": False}
    head = pl.read_excel(path, read_options={"n_rows": 1}, **opts)  # type: ignore[call-overload]

    def make(text: Collection[str]) -> pl.LazyFrame:
        over = {c: pl.String for c in text if c in head.columns}
        df = pl.read_excel(path, schema_overrides=over, **opts)  # type: ignore[call-overload]
        return _numbered(df.lazy().with_columns(pl.col(list(over)).fill_null("")))

    return Raw("excel", head.schema, make, _rejects([], ""))


def _json_array(path: Path, shown: Path) -> Raw:
    # Wrapping the array as one object lets Polars infer one type over every element, and
    # copes with rows wrapped in one-element lists (`[[{...}], [{...}]]`).
    data = path.read_bytes()
    doc = pl.read_json(io.BytesIO(b'{"rows":' + data + b"}"), infer_schema_length=None)
    rows = doc.lazy().select(pl.col("rows").explode()).with_row_index(ROW)
    rows = rows.with_columns(pl.col(ROW).cast(pl.Int64))
    dtype = doc.schema["rows"]
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    rejects = _rejects([], "")
    if isinstance(inner, pl.List):
        n = pl.col("rows").list.len()
        bad = rows.filter(n.fill_null(0) != 1).select(
            pl.col(ROW).alias("row"),
            pl.lit("not_an_object").alias("reason"),
            pl.format("a list of {} values, expected one object", n.fill_null(0)).alias("detail"),
            pl.lit(None, pl.String).alias("raw"),
        )
        rejects = bad.collect()
        rows = rows.filter(n == 1).with_columns(pl.col("rows").list.first())
        inner = inner.inner
    if inner == pl.Null:  # `[]`, or nothing but nulls
        nulls = rows.select(pl.col(ROW).alias("row")).collect()["row"].to_list()
        rejects = pl.concat([rejects, _rejects(nulls, "not_an_object", ["null"] * len(nulls))])
        return Raw("json", pl.Schema({ROW: pl.Int64}), lambda _: _empty(), rejects)
    if not isinstance(inner, pl.Struct):
        raise InputError(f"{shown}: a JSON array of objects was expected, found {dtype}")
    frame = rows.unnest("rows").collect().lazy()
    schema = frame.collect_schema()
    return Raw("json", schema, lambda _: frame, rejects)


# Bytes of JSON Lines parsed at a time (bounds memory). Blocks below glibc's 32 MB mmap ceiling
# reuse freed heap memory: 64 MB blocks cost ~2x the page faults (0.7 vs 0.4 system CPU-s per
# 157 MB of input) for the same user time.
JSONL_CHUNK = 16 << 20


def _blocks(path: Path, size: int = JSONL_CHUNK) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` blocks of ``path`` that end at a newline (or the end of the file),
    read with plain reads so that memory stays one block (a memory map would count the whole
    file as resident). Each read starts where the last block ended: a block is copied once."""
    offset = 0
    with path.open("rb") as fh:
        while True:
            fh.seek(offset)
            data = fh.read(size)
            if len(data) < size:  # the rest of the file (or nothing)
                if data:
                    yield offset, data
                return
            cut = data.rfind(b"\n") + 1
            while cut == 0:  # a line longer than a block: read on to its end
                more = fh.read(size)
                nl = more.find(b"\n")
                cut = len(data) + nl + 1 if nl >= 0 else (0 if more else len(data) + 1)
                data += more
            cut = min(cut, len(data))
            yield offset, data if cut == len(data) else data[:cut]
            offset += cut


def _polars_type(t: tuple[Any, ...]) -> pl.DataType:
    """The Polars type of a type from :func:`_native.scan_jsonl` (nested tuples)."""
    kind = t[0]
    if kind == "list":
        return pl.List(_polars_type(t[1]))
    if kind == "struct":
        return pl.Struct([pl.Field(name, _polars_type(x)) for name, x in t[1]])
    return {"null": pl.Null(), "bool": pl.Boolean(), "i64": pl.Int64(), "f64": pl.Float64(),
            "str": pl.String()}[kind]


def _jsonl_stream(path: Path, jtype: tuple[Any, ...], block: int = JSONL_CHUNK) -> pl.LazyFrame:
    """``path`` parsed block by block as a query pulls them (memory: one block), with the type
    the Rust scan inferred (Polars' own rules, see ``rust/src/jsontype.rs``): each block is
    parsed once, straight into Arrow columns (``rust/src/jsoncols.rs``; only the columns the
    query reads), with no inference pass and no temporary files."""
    from polars.io.plugins import register_io_source

    first = jtype[1][0][0]

    def source(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
               batch_size: int | None) -> Iterator[pl.DataFrame]:
        left = n_rows
        # No columns (a row count): one column, dropped below (a frame of no columns built in
        # Rust would lose its height on the way to Python).
        cols = with_columns or ([first] if with_columns is not None else None)
        for _, data in _blocks(path, block):
            if left is not None and left <= 0:
                return
            # Frames of at most a batch (the engine may queue several batches ahead).
            for df in _native.jsonl_frames(data, jtype, cols, batch_size or 10_000):
                if with_columns is not None and not with_columns:
                    df = df.drop(df.columns)
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    if left <= 0:
                        return
                    df = df.head(left)
                    left -= df.height
                yield df

    return register_io_source(source, schema=_polars_type(jtype).to_schema())


def _jsonl_parts(path: Path, out: Path) -> list[Path]:
    """Parse ``path`` block by block into Parquet parts in ``out`` (bounded memory)."""
    parts = []
    for i, (_, block) in enumerate(_blocks(path)):
        if block.isspace():  # (no copy, unlike strip)
            continue
        df = pl.read_ndjson(io.BytesIO(block), infer_schema_length=None)
        part = out / f"part-{i:05d}.parquet"
        df.write_parquet(part, compression="uncompressed")
        parts.append(part)
    return parts


def _jsonl(path: Path, shown: Path, workdir: Callable[[], Path]) -> Raw:
    if path.stat().st_size == 0:
        return Raw("jsonl", pl.Schema({ROW: pl.Int64}), lambda _: _empty(), _rejects([], ""))
    bad, blank, odd, total, jtype = _native.scan_jsonl(str(path))
    not_object = [line - 1 for line in odd]
    rejects = pl.concat(
        [
            _rejects(
                [line - 1 for line, _ in bad],
                "invalid_json",
                [why.removeprefix("invalid_json: ") for _, why in bad],
            ),
            _rejects(
                not_object,
                "not_an_object",
                ["a JSON Lines row must be an object"] * len(not_object),
            ),
        ]
    ).sort("row")
    skipped = np.unique(np.concatenate([
        np.asarray(blank, np.int64) - 1, np.asarray(not_object, np.int64),
        np.asarray([line for line, _ in bad], np.int64) - 1]))
    clean = path
    if bad or not_object:
        clean = workdir() / f"{len(list(workdir().iterdir()))}-clean-{path.name}"
        _native.scan_jsonl(str(path), str(clean))
    if total - len(skipped) <= 0:
        return Raw("jsonl", pl.Schema({ROW: pl.Int64}), lambda _: _empty(), rejects)
    # The scan's schema (when the rows have one without coercions) has the columns and struct
    # fields in order of first appearance; Polars' own inference orders them by hash.
    if jtype is not None:  # parse blocks as the query pulls them
        lf = _jsonl_stream(clean, jtype)
    elif clean.stat().st_size <= JSONL_CHUNK:
        lf = pl.scan_ndjson(clean, infer_schema_length=None)
    else:  # large: parse in blocks into Parquet parts, so memory stays bounded
        folder = workdir() / f"{len(list(workdir().iterdir()))}-parts-{path.name}"
        folder.mkdir()
        lf = pl.concat([pl.scan_parquet(p) for p in _jsonl_parts(clean, folder)],
                       how="diagonal_relaxed")
    lf = physical_rows(lf, skipped)
    return Raw("jsonl", lf.collect_schema(), lambda _: lf, rejects)


def physical_rows(lf: pl.LazyFrame, skipped: np.ndarray) -> pl.LazyFrame:
    """``lf`` (the lines of a file that are rows) with ``sft_row`` (Int64): each row's 0-based
    physical line, given the sorted 0-based lines that are not rows (blank, bad, not objects)."""
    lf = lf.with_row_index(ROW)
    index = pl.col(ROW).cast(pl.Int64)
    if len(skipped):
        # Row i of the clean file is physical line i + #{skipped lines before it}: with
        # thresholds t_k = s_k - k (non-decreasing), that count is searchsorted(t, i, "right").
        t = pl.Series(skipped - np.arange(len(skipped)), dtype=pl.Int64)
        index = index + pl.lit(t).search_sorted(index, side="right").cast(pl.Int64)
    return lf.with_columns(index.alias(ROW))


def _empty() -> pl.LazyFrame:
    return pl.LazyFrame(schema={ROW: pl.Int64})
