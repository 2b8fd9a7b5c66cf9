"""Read SFT data of any common shape into canonical chat rows.

:func:`read` takes files, globs or folders of JSON Lines, JSON arrays, Parquet, CSV or Excel
(optionally gzip / zstd compressed), recognises each file's schema from its field names, and
returns one Polars LazyFrame of canonical rows plus every row it rejected, with the reason.

Schemas, tried in this order (the first match wins; ``schema=`` picks one by name or maps the
columns explicitly):

=========  ======================================================  ==========================
name       fields                                                  messages
=========  ======================================================  ==========================
openai     ``messages`` / ``conversations`` / ``conversation``:    one per element; an
           list of ``{role, content}`` (``tool_calls`` optional)    assistant with tool_calls
                                                                   → ``tool_call``
sharegpt   the same lists of ``{from, value}``; ``system``,        one per element, roles
           ``tools`` optional                                      mapped as below
turns      ``turns``: list of strings (MT-Bench questions)          all ``user`` → rejected
                                                                   ``no_assistant_turn``
history    ``history``: list of strings prefixed ``[role]``        role from the prefix
           (lawyer-llama ``[客户]`` / ``[律师]``)                   (``roles=`` adds names)
alpaca     ``instruction`` + ``output`` or ``response``,           user = instruction, plus
           ``input`` optional                                      ``"\\n\\n" + input`` if
                                                                   non-empty; assistant
qa         ``question``+``answer`` / ``std_answer`` /              user, assistant
           ``response``; ``query``+``response`` / ``answer``;
           ``prompt``+``response`` / ``completion``;
           ``input``+``target`` / ``output``
=========  ======================================================  ==========================

Every schema also takes a top-level ``system`` (string) and ``tools`` (JSON string, list or
struct; kept as JSON text, ``""`` and ``"[]"`` read as null) column, and an id from the first
of ``id``, ``question_id``, ``conversation_id``, ``qid``, ``uid`` (cast to text; otherwise
``"<source>:<sft_row>"``). All other columns are kept unchanged; one whose name clashes with an
output column gets the suffix ``_orig`` (an input ``source`` becomes ``source_orig``).

Roles (after strip and lowercase): human, user → ``user``; gpt, assistant, chatgpt, bing,
bard, model → ``assistant``; system → ``system``; function_call → ``tool_call`` (content: the
call's JSON text, unchanged); observation, tool, function → ``tool``. A leading system turn moves
into the ``system`` column (after a top-level ``system``, joined by a blank line). ``tool_call``
is kept apart from ``assistant`` so a chat template can render calls as calls; both are
assistant-side (trained) turns. An OpenAI assistant message with ``tool_calls`` becomes a
``tool_call`` turn holding their JSON text (its text content, if any, is not kept); per message
only role and content are kept (``name``, ``tool_call_id`` are dropped). Mixed-type columns:
Polars reads a JSON field holding strings and other values as text (so ``answer_choices`` in
pCLUE, a list in most rows and a string in two, is kept as text).

Role order: after the optional system turn, a row is ``user`` then an assistant-side block,
repeated, where a block is any number of ``tool_call`` + one or more ``tool`` results followed by
an ``assistant`` answer, and the last block may end on a ``tool_call``
(regex ``^(?:U(?:CT+)*A)*U(?:CT+)*[AC]$``).

Reject reasons (the first that applies): ``invalid_json``, ``not_an_object`` (a JSON Lines row
or wrapped row that is not one object), ``missing_field:<name>`` (null or absent),
``non_string_content`` (a text field whose values are not JSON strings), ``unknown_role``,
``no_assistant_turn``, ``wrong_role_order``, ``empty_assistant`` (an assistant-side turn that is
empty after strip). Polars' JSON reader coerces a field holding strings *and* other JSON values
to text, so ``non_string_content`` is detected where a field's values are not strings at all.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sftfast._formats import (
    COMPRESSED,
    FORMATS,
    REJECT_SCHEMA,
    ROW,
    SUFFIXES,
    load,
    plain_file,
    sniff,
)
from sftfast._schemas import (
    MESSAGES,
    REASON,
    ROLE_ALIASES,
    ROLES,
    SCHEMAS,
    Normalized,
    Spec,
    detect,
    from_mapping,
    normalize,
)
from sftfast.exceptions import ConfigError, InputError, SchemaError

__all__ = ["FileSchema", "FileStats", "ReadResult", "ReadStats", "read"]

_OUTPUT = pl.Schema(
    {
        "messages": MESSAGES,
        "system": pl.String(),
        "tools": pl.String(),
        "id": pl.String(),
        "source": pl.String(),
        ROW: pl.Int64(),
    }
)


@dataclass(frozen=True)
class FileSchema:
    """How one file was read: its format, the schema name and the columns each role came from."""

    format: str
    schema: str
    fields: dict[str, str]


@dataclass(frozen=True)
class FileStats:
    """Row accounting of one file: ``rows_in == rows_kept + sum(rejected.values())``."""

    rows_in: int
    rows_kept: int
    rejected: dict[str, int]


@dataclass(frozen=True)
class ReadStats:
    """Row accounting in total and per file (keyed by source path)."""

    rows_in: int
    rows_kept: int
    rejected: dict[str, int]
    files: dict[str, FileStats]


@dataclass(frozen=True)
class ReadResult:
    """Canonical rows (lazy), rejected rows, counts and the schema of every file.

    ``frame`` may read decompressed or cleaned copies of inputs; they live in a temporary
    folder that is removed when the process exits, so the frame stays valid on its own.
    """

    frame: pl.LazyFrame
    rejects: pl.DataFrame
    stats: ReadStats
    schemas: dict[str, FileSchema]


def _supported(path: Path) -> bool:
    name = path.name.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    return Path(name).suffix in SUFFIXES


def _expand(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise InputError("paths: no input files given")
    found: dict[Path, None] = {}
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if any(ch in text for ch in "*?["):
            anchor = Path(path.anchor or ".")
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else text
            matches = sorted(p for p in anchor.glob(pattern) if p.is_file())
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
        elif path.is_file():
            matches = [path]
        else:
            raise InputError(f"{text}: no such file or directory")
        if not matches:
            raise InputError(f"{text}: matches no supported input file")
        found.update(dict.fromkeys(matches))
    return list(found)


def _aliases(roles: Mapping[str, str] | None) -> dict[str, str]:
    aliases = dict(ROLE_ALIASES)
    for name, role in (roles or {}).items():
        if role not in ROLES:
            raise ConfigError(f"roles: {name!r} maps to {role!r}, expected one of {ROLES}")
        aliases[name.strip().lower()] = role
    return aliases


def _spec(schema: pl.Schema, wanted: str | Spec | None, shown: Path) -> Spec:
    if isinstance(wanted, Spec):
        return wanted
    spec = detect(schema, wanted)
    if spec is None:
        cols = ", ".join(c for c in schema if c != ROW) or "none"
        which = f"schema {wanted!r}" if wanted else "no known schema"
        raise SchemaError(
            f"{shown}: {which} matches the columns ({cols}); pass schema= with a mapping, "
            "e.g. {'user': 'question', 'assistant': 'answer'}"
        )
    return spec


def read(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    schema: str | Mapping[str, str] | None = None,
    strict: bool = False,
    roles: Mapping[str, str] | None = None,
) -> ReadResult:
    r"""Read SFT files into canonical chat rows, accounting for every input row.

    Parameters
    ----------
    paths
        A file, glob (``**`` allowed) or folder (every supported file under it), or a list of
        them. Suffixes: ``.jsonl .ndjson .json .parquet .csv .tsv .xlsx .xlsm .xls``, each
        optionally with ``.gz`` / ``.zst``; compression is recognised by its magic bytes.
    format
        Force one format for every file: ``"jsonl"``, ``"json"``, ``"parquet"``, ``"csv"`` or
        ``"excel"``. By default the suffix decides and a ``.json`` file is sniffed (JSON Lines
        unless it is one array).
    schema
        A schema name (``"openai"``, ``"sharegpt"``, ``"alpaca"``, ``"qa"``, ``"turns"``,
        ``"history"``) to insist on, or a mapping from ``messages role content user assistant
        input turns history system tools id`` to column names, e.g. ``{"user": "question",
        "assistant": "answer", "id": "qid"}`` or ``{"messages": "conversations", "role":
        "from", "content": "value"}``. By default each file's schema is detected.
    strict
        Raise :class:`~sftfast.InputError` naming the file, row and reason of the first
        rejected row instead of setting it aside.
    roles
        Extra source role names → canonical role (``system user assistant tool_call tool``).

    Returns
    -------
    ReadResult
        ``frame``: LazyFrame with ``messages`` (list of ``{role, content}``), ``system``,
        ``tools`` (JSON text), ``id``, ``source`` (file), ``sft_row`` (0-based row; the line for
        JSON Lines) and the file's other columns. ``rejects``: DataFrame ``source, row, reason,
        detail, raw`` (the row as JSON text where it parsed). ``stats`` and ``schemas``.

    Raises
    ------
    InputError
        A path matches nothing, a file cannot be read, or ``strict`` and a row is rejected.
    SchemaError
        No schema matches a file's columns.
    ConfigError
        An invalid ``format``, ``schema`` or ``roles``.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> from sftfast.reader import read
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "qa.jsonl"
    >>> rows = [{"question": "2+2?", "answer": "4", "topic": "math"},
    ...         {"question": "Hi", "answer": " ", "topic": "chat"}]
    >>> _ = p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    >>> result = read(p)
    >>> result.schemas[str(p)].schema
    'qa'
    >>> result.frame.select("messages", "topic", "sft_row").collect().to_dicts()
    [{'messages': [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}], 'topic': 'math', 'sft_row': 0}]
    >>> result.rejects.select("row", "reason").to_dicts()
    [{'row': 1, 'reason': 'empty_assistant'}]
    >>> result.stats.rows_in, result.stats.rows_kept, result.stats.rejected
    (2, 1, {'empty_assistant': 1})
    """
    wanted = _wanted(schema, format)
    aliases = _aliases(roles)
    files = _expand(paths)
    holder: list[str] = []

    def workdir() -> Path:
        if not holder:
            holder.append(tempfile.mkdtemp(prefix="sftfast-read-"))
        return Path(holder[0])

    try:
        return _read(files, format, wanted, strict, aliases, workdir)
    except BaseException:
        for path in holder:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        for path in holder:
            atexit.register(shutil.rmtree, path, ignore_errors=True)


@dataclass
class _File:
    """One input file, opened: its schema and its rows marked with a reason (lazy)."""

    source: str
    schema: FileSchema
    early: pl.DataFrame  # rows rejected before parsing (invalid JSON, ...)
    norm: Normalized | None  # None: no parseable row at all


def _open_files(
    files: list[Path],
    format: str | None,
    wanted: str | Spec | None,
    aliases: Mapping[str, str],
    workdir: Callable[[], Path],
) -> list[_File]:
    out = []
    for shown in files:
        source = str(shown)
        plain = plain_file(shown, workdir)
        kind = format or sniff(plain, shown)
        raw = load(plain, kind, shown, workdir)
        if not [c for c in raw.schema if c != ROW]:  # no parseable row at all
            out.append(_File(source, FileSchema(kind, "none", {}), raw.rejects, None))
            continue
        spec = _spec(raw.schema, wanted, shown)
        text = [
            spec.fields[k] for k in ("user", "assistant", "input", "system") if k in spec.fields
        ]
        lf = raw.make(text)
        norm = normalize(lf, lf.collect_schema(), spec, source=source, aliases=aliases)
        out.append(_File(source, FileSchema(kind, spec.name, dict(spec.fields)), raw.rejects,
                         norm))
    return out


def scan_marked(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    schema: str | Mapping[str, str] | None = None,
    roles: Mapping[str, str] | None = None,
) -> tuple[pl.LazyFrame, pl.DataFrame, dict[str, FileSchema], Callable[[], None]]:
    """Every parsed row of ``paths`` in one lazy pass (for the pipeline): the canonical columns
    plus ``sft_drop_reason`` (null = kept), ``sft_drop_detail`` and ``sft_raw`` (the row as
    JSON, on rejected rows only); the rows rejected before parsing (``source, row, reason,
    detail, raw``); the schemas; and a function that removes the temporary copies once the
    frame has been consumed. Options as in :func:`read`."""
    wanted = _wanted(schema, format)
    holder: list[str] = []

    def workdir() -> Path:
        if not holder:
            holder.append(tempfile.mkdtemp(prefix="sftfast-read-"))
        return Path(holder[0])

    def cleanup() -> None:
        for path in holder:
            shutil.rmtree(path, ignore_errors=True)

    try:
        opened = _open_files(_expand(paths), format, wanted, _aliases(roles), workdir)
    except BaseException:
        cleanup()
        raise
    frames = []
    for f in opened:
        if f.norm is None:
            continue
        bad = pl.col(REASON).is_not_null()
        frames.append(f.norm.frame.select(
            *f.norm.output, pl.col(REASON).alias("sft_drop_reason"),
            f.norm.detail.alias("sft_drop_detail"),
            f.norm.raw(bad).alias("sft_raw")))
    early = [f.early.select(pl.lit(f.source).alias("source"), pl.all()) for f in opened]
    frame = (pl.concat(frames, how="diagonal_relaxed") if frames
             else pl.LazyFrame(schema=_OUTPUT))
    rejects = pl.concat(early) if early else pl.DataFrame(
        schema={"source": pl.String, **REJECT_SCHEMA})
    return frame, rejects, {f.source: f.schema for f in opened}, cleanup


def _wanted(schema: str | Mapping[str, str] | None, format: str | None) -> str | Spec | None:
    if format is not None and format not in FORMATS:
        raise ConfigError(f"format: expected one of {FORMATS} or None, got {format!r}")
    if schema is None or isinstance(schema, str):
        if schema is not None and schema not in SCHEMAS:
            raise ConfigError(f"schema: expected one of {SCHEMAS} or a mapping, got {schema!r}")
        return schema
    if isinstance(schema, Mapping):
        return from_mapping(schema)
    raise ConfigError(f"schema: expected a name or a mapping, got {schema!r}")


def _read(
    files: list[Path],
    format: str | None,
    wanted: str | Spec | None,
    strict: bool,
    aliases: Mapping[str, str],
    workdir: Callable[[], Path],
) -> ReadResult:
    schemas: dict[str, FileSchema] = {}
    kept: list[pl.LazyFrame] = []
    queries: list[pl.LazyFrame] = []
    early: list[pl.DataFrame] = []
    for f in _open_files(files, format, wanted, aliases, workdir):
        schemas[f.source] = f.schema
        early.append(f.early)
        norm = f.norm
        if norm is None:
            queries += [pl.LazyFrame(schema=REJECT_SCHEMA), pl.LazyFrame({"n": [0]})]
            continue
        reason = pl.col(REASON)
        kept.append(norm.frame.filter(reason.is_null()).select(norm.output))
        queries.append(
            norm.frame.filter(reason.is_not_null()).select(
                pl.col(ROW).alias("row"),
                reason.alias("reason"),
                norm.detail.alias("detail"),
                norm.raw().alias("raw"),
            )
        )
        queries.append(norm.frame.select(pl.len().cast(pl.Int64).alias("n")))
    try:
        collected = pl.collect_all(queries)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"reading {len(files)} file(s) failed: {exc}") from exc

    per_file: dict[str, FileStats] = {}
    parts: list[pl.DataFrame] = []
    for i, shown in enumerate(files):
        source = str(shown)
        rej = pl.concat([early[i], collected[2 * i].cast(REJECT_SCHEMA)]).sort("row")  # type: ignore[arg-type]
        if strict and rej.height:
            row, reason, detail = rej.row(0)[:3]
            where = f"row {row}" + (
                f" (line {row + 1})" if schemas[source].format == "jsonl" else ""
            )
            raise InputError(f"{source}: {where}: {reason}" + (f" ({detail})" if detail else ""))
        counts = dict(sorted(rej.group_by("reason").len().iter_rows()))
        rows_in = int(collected[2 * i + 1]["n"][0]) + early[i].height
        per_file[source] = FileStats(rows_in, rows_in - rej.height, counts)
        parts.append(rej.select(pl.lit(source).alias("source"), pl.all()))
    rejects = (
        pl.concat(parts) if parts else pl.DataFrame(schema={"source": pl.String, **REJECT_SCHEMA})
    )
    total: dict[str, int] = {}
    for fs in per_file.values():
        for why, n in fs.rejected.items():
            total[why] = total.get(why, 0) + n
    stats = ReadStats(
        rows_in=sum(fs.rows_in for fs in per_file.values()),
        rows_kept=sum(fs.rows_kept for fs in per_file.values()),
        rejected=dict(sorted(total.items())),
        files=per_file,
    )
    frame = pl.concat(kept, how="diagonal_relaxed") if kept else pl.LazyFrame(schema=_OUTPUT)
    return ReadResult(frame, rejects, stats, schemas)
