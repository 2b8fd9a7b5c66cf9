"""Schema detection by field names, and Polars expressions that turn raw rows into chat rows.

Everything here is per file (choosing a :class:`Spec` from column names and dtypes) or builds
expressions; no row is touched in Python. See :mod:`sftfast.reader` for the schema table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl

from sftfast._formats import ROW
from sftfast.exceptions import ConfigError

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
CANONICAL = ("messages", "system", "tools", "id", "source", ROW)
ROLES = ("system", "user", "assistant", "tool_call", "tool")

# Source role names (matched after strip + lowercase) → canonical role. `roles=` adds to it.
ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "客户": "user",  # lawyer-llama history prefix "[客户]" (client)
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "律师": "assistant",  # lawyer-llama "[律师]" (lawyer)
    "system": "system",
    "function_call": "tool_call",
    "tool_call": "tool_call",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
_CODES = {"user": "U", "assistant": "A", "tool_call": "C", "tool": "T", "system": "S"}
# user, then assistant-side blocks: any number of (tool_call, tool results...) and an answer;
# the last block may end on a tool_call.
ROLE_ORDER = r"^(?:U(?:CT+)*A)*U(?:CT+)*[AC]$"

SCHEMAS = ("openai", "sharegpt", "alpaca", "qa", "turns", "history")
_CHAT_COLUMNS = ("messages", "conversations", "conversation")
_CHAT_KEYS = (("role", "content", "openai"), ("from", "value", "sharegpt"))
_ALPACA = (("instruction", "output"), ("instruction", "response"))
_QA = (
    ("question", "answer"),
    ("question", "std_answer"),
    ("question", "response"),
    ("query", "response"),
    ("query", "answer"),
    ("prompt", "response"),
    ("prompt", "completion"),
    ("input", "target"),
    ("input", "output"),
)
_IDS = ("id", "question_id", "conversation_id", "qid", "uid")
MAPPING_KEYS = (
    "messages",
    "role",
    "content",
    "user",
    "assistant",
    "input",
    "turns",
    "history",
    "system",
    "tools",
    "id",
)


@dataclass(frozen=True)
class Spec:
    """How one file's columns map onto a chat row: schema name, kind and the columns used."""

    name: str
    kind: str  # chat | flat | turns | history
    fields: Mapping[str, str] = field(default_factory=dict)


def _is_scalar(dtype: object) -> bool:
    return not isinstance(dtype, (pl.List, pl.Array, pl.Struct))


def _candidates(schema: pl.Schema) -> Iterator[Spec]:
    for col in _CHAT_COLUMNS:
        dt = schema.get(col)
        if isinstance(dt, pl.List) and isinstance(dt.inner, pl.Struct):
            keys = {f.name for f in dt.inner.fields}
            for role, content, name in _CHAT_KEYS:
                if role in keys and content in keys:
                    yield Spec(name, "chat", {"messages": col, "role": role, "content": content})
    for kind in ("turns", "history"):
        dt = schema.get(kind)
        if isinstance(dt, pl.List) and dt.inner == pl.String:
            yield Spec(kind, kind, {kind: kind})
    for name, pairs in (("alpaca", _ALPACA), ("qa", _QA)):
        for user, assistant in pairs:
            if user in schema and assistant in schema:
                fields = {"user": user, "assistant": assistant}
                if name == "alpaca" and "input" in schema:
                    fields["input"] = "input"
                yield Spec(name, "flat", fields)


def detect(schema: pl.Schema, name: str | None = None) -> Spec | None:
    """The first schema whose fields ``schema`` has (only ``name`` if given), or None."""
    for spec in _candidates(schema):
        if name is None or spec.name == name:
            fields = dict(spec.fields)
            used = set(fields.values())
            for key in ("system", "tools"):
                if key in schema and key not in used:
                    fields[key] = key
            ids = [c for c in _IDS if c in schema and c not in used and _is_scalar(schema[c])]
            if ids:
                fields["id"] = ids[0]
            return Spec(spec.name, spec.kind, fields)
    return None


def from_mapping(mapping: Mapping[str, str]) -> Spec:
    """A :class:`Spec` from an explicit ``schema=`` mapping (canonical key → column name)."""
    unknown = sorted(set(mapping) - set(MAPPING_KEYS))
    if unknown or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(
            f"schema: keys must be among {', '.join(MAPPING_KEYS)} with column-name strings, "
            f"got {dict(mapping)!r}"
        )
    fields = dict(mapping)
    if "messages" in fields:
        fields.setdefault("role", "role")
        fields.setdefault("content", "content")
        return Spec("mapping", "chat", fields)
    for kind in ("turns", "history"):
        if kind in fields:
            return Spec("mapping", kind, fields)
    if "user" in fields and "assistant" in fields:
        return Spec("mapping", "flat", fields)
    raise ConfigError(
        "schema: a mapping needs 'messages', 'turns', 'history', or both 'user' and "
        f"'assistant'; got {dict(mapping)!r}"
    )


@dataclass
class _Parts:
    """Stage-one expressions of one file, before the checks shared by every kind."""

    msgs: pl.Expr = field(default_factory=lambda: pl.lit(None, MESSAGES))
    role_names: pl.Expr = field(default_factory=lambda: pl.lit(None, pl.List(pl.String)))
    checks: list[tuple[pl.Expr, str]] = field(default_factory=list)
    role_field: str = "role"
    content_field: str = "content"


def _canon(raw: pl.Expr, aliases: Mapping[str, str]) -> pl.Expr:
    mapped = raw.str.strip_chars().str.to_lowercase().replace_strict(aliases, default="?")
    return pl.when(raw.is_null()).then(pl.lit(None, pl.String)).otherwise(mapped)


def _json_text(expr: pl.Expr) -> pl.Expr:
    """JSON text of any value (Polars encodes structs only, so wrap and unwrap one)."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return encoded.str.strip_prefix('{"v":').str.strip_suffix("}")


def _text(schema: pl.Schema, col: str, parts: _Parts, *, required: bool) -> pl.Expr:
    """A String column, with checks for missing (if required) and non-string values."""
    dt = schema.get(col)
    if dt is None:
        if required:
            parts.checks.append((pl.lit(True), f"missing_field:{col}"))
        return pl.lit(None, pl.String)
    if required:
        parts.checks.append((pl.col(col).is_null(), f"missing_field:{col}"))
    if dt in (pl.String, pl.Null):
        return pl.col(col).cast(pl.String)
    parts.checks.append((pl.col(col).is_not_null(), "non_string_content"))
    return pl.lit(None, pl.String)


def _chat(schema: pl.Schema, f: Mapping[str, str], aliases: Mapping[str, str]) -> _Parts:
    m, r, c = f["messages"], f["role"], f["content"]
    parts = _Parts(role_field=r, content_field=c)
    dt = schema.get(m)
    if dt is None:
        parts.checks.append((pl.lit(True), f"missing_field:{m}"))
        return parts
    inner = dt.inner if isinstance(dt, pl.List) else None
    keys = {x.name: x.dtype for x in inner.fields} if isinstance(inner, pl.Struct) else {}
    if r not in keys or c not in keys:
        missing = r if r not in keys else c
        parts.checks.append((pl.col(m).is_not_null(), f"missing_field:{missing}"))
        return parts
    el = pl.element().struct.field
    if _is_scalar(keys[r]):
        role_raw = el(r).cast(pl.String)
    else:
        role_raw = pl.when(el(r).is_null()).then(pl.lit(None, pl.String)).otherwise(pl.lit("?"))
    if keys[c] in (pl.String, pl.Null):
        content = el(c).cast(pl.String)
    else:
        nonstr = pl.col(m).list.eval(el(c).is_not_null()).list.any()
        parts.checks.append((nonstr, "non_string_content"))
        content = pl.when(el(c).is_null()).then(pl.lit(None, pl.String)).otherwise(pl.lit(""))
    role = _canon(role_raw, aliases)
    if isinstance(keys.get("tool_calls"), pl.List):
        # OpenAI: an assistant message carrying tool_calls becomes a tool_call turn whose
        # content is the JSON text of its tool_calls.
        is_call = (role == "assistant") & (el("tool_calls").list.len() > 0).fill_null(False)
        content = pl.when(is_call).then(_json_text(el("tool_calls"))).otherwise(content)
        role = pl.when(is_call).then(pl.lit("tool_call")).otherwise(role)
    parts.msgs = pl.col(m).list.eval(pl.struct(role.alias("role"), content.alias("content")))
    parts.role_names = pl.col(m).list.eval(role_raw.fill_null("null"))
    return parts


def _turns(schema: pl.Schema, col: str, aliases: Mapping[str, str], *, prefixed: bool) -> _Parts:
    """`turns`: user questions only. `history`: strings prefixed with a role, like `[客户] …`."""
    parts = _Parts(role_field=col, content_field=col)
    dt = schema.get(col)
    if dt is None:
        parts.checks.append((pl.lit(True), f"missing_field:{col}"))
        return parts
    if not (isinstance(dt, pl.List) and dt.inner in (pl.String, pl.Null)):
        parts.checks.append((pl.col(col).is_not_null(), "non_string_content"))
        return parts
    el = pl.element().cast(pl.String)
    if prefixed:
        raw = el.str.extract(r"^\s*\[([^\]]*)\]", 1).fill_null("")
        role = _canon(pl.when(el.is_null()).then(pl.lit(None, pl.String)).otherwise(raw), aliases)
        content = el.str.replace(r"^\s*\[[^\]]*\]\s*", "")
    else:
        raw = pl.lit("user")
        role, content = pl.lit("user"), el
    parts.msgs = pl.col(col).list.eval(pl.struct(role.alias("role"), content.alias("content")))
    parts.role_names = pl.col(col).list.eval(raw)
    return parts


def _flat(schema: pl.Schema, f: Mapping[str, str]) -> _Parts:
    parts = _Parts(role_field="role", content_field="content")
    user = _text(schema, f["user"], parts, required=True)
    assistant = _text(schema, f["assistant"], parts, required=True)
    if "input" in f:
        extra = _text(schema, f["input"], parts, required=False)
        # Alpaca: a non-empty `input` follows the instruction after a blank line.
        has = extra.is_not_null() & (extra.str.strip_chars() != "")
        user = pl.when(has).then(pl.concat_str([user, extra], separator="\n\n")).otherwise(user)
    parts.msgs = pl.concat_list(
        pl.struct(pl.lit("user").alias("role"), user.alias("content")),
        pl.struct(pl.lit("assistant").alias("role"), assistant.alias("content")),
    )
    parts.role_names = pl.lit(["user", "assistant"], pl.List(pl.String))
    return parts


@dataclass(frozen=True)
class Normalized:
    """One file's rows with a reason (null = kept), and the expressions of the output."""

    frame: pl.LazyFrame
    output: list[pl.Expr]
    originals: list[str]
    detail: pl.Expr

    def raw(self, where: pl.Expr | None = None) -> pl.Expr:
        """The row as JSON text (its original fields), on the rows ``where`` holds (else
        null). Per batch, only those rows are encoded: Polars' JSON writer walks every row of
        a struct even where it is null (~10% of a read when nearly no row is rejected)."""
        if not self.originals:
            return pl.lit(None, pl.String)
        if where is None:
            return pl.struct(self.originals).struct.json_encode()
        return pl.struct(pl.struct(self.originals).alias("v"), where.alias("w")).map_batches(
            _encode_where, return_dtype=pl.String, is_elementwise=True)


def _encode_where(s: pl.Series) -> pl.Series:
    """Field ``v`` as JSON text on the rows where field ``w`` is true, else null."""
    out = pl.repeat(None, len(s), dtype=pl.String, eager=True)
    w = s.struct.field("w").fill_null(False)
    if not w.any():
        return out
    at = w.arg_true()
    return out.scatter(at, s.struct.field("v").gather(at).struct.json_encode())


REASON, DETAIL = "__sft_reason", "__sft_detail"


def normalize(
    lf: pl.LazyFrame, schema: pl.Schema, spec: Spec, *, source: str, aliases: Mapping[str, str]
) -> Normalized:
    """Canonical columns and a reject reason for every row of one file (lazy)."""
    f = spec.fields
    if spec.kind == "chat":
        parts = _chat(schema, f, aliases)
    elif spec.kind in ("turns", "history"):
        parts = _turns(schema, f[spec.kind], aliases, prefixed=spec.kind == "history")
    else:
        parts = _flat(schema, f)
    top = _text(schema, f["system"], parts, required=False) if "system" in f else None
    top = pl.lit(None, pl.String) if top is None else pl.when(top.str.strip_chars() != "").then(top)
    lf = lf.with_columns(
        parts.msgs.alias("__sft_msgs"),
        parts.role_names.alias("__sft_names"),
        top.alias("__sft_sys"),
    )
    msgs = pl.col("__sft_msgs")
    first = msgs.list.first()
    first_sys = (first.struct.field("role") == "system").fill_null(False)
    sys_turn = pl.when(first_sys).then(first.struct.field("content"))
    # A top-level system field and a leading system turn are both kept, in that order.
    system = pl.concat_str([pl.col("__sft_sys"), sys_turn], separator="\n\n", ignore_nulls=True)
    rest = pl.when(first_sys).then(msgs.list.slice(1)).otherwise(msgs)
    lf = lf.with_columns(
        pl.when(system.str.strip_chars() != "").then(system).alias("__sft_system"),
        rest.alias("__sft_rest"),
    )
    role = pl.element().struct.field("role")
    content = pl.element().struct.field("content")
    codes = pl.col("__sft_rest").list.eval(role.replace_strict(_CODES, default="?")).list.join("")
    side = role.is_in(["assistant", "tool_call"]) & (content.str.strip_chars() == "")
    container = f.get("messages", f.get(spec.kind, "messages"))
    checks = [
        *parts.checks,
        (msgs.is_null(), f"missing_field:{container}"),
        (msgs.list.eval(role.is_null()).list.any(), f"missing_field:{parts.role_field}"),
        (msgs.list.eval(content.is_null()).list.any(), f"missing_field:{parts.content_field}"),
        (codes.str.contains("?", literal=True), "unknown_role"),
        (~codes.str.contains("[AC]"), "no_assistant_turn"),
        (~codes.str.contains(ROLE_ORDER), "wrong_role_order"),
        (pl.col("__sft_rest").list.eval(side).list.any(), "empty_assistant"),
    ]
    # The first failing check: coalesce is ~20x faster than a nested when/then chain.
    reason = pl.coalesce([pl.when(cond.fill_null(False)).then(pl.lit(why)) for cond, why in checks])
    lf = lf.with_columns(reason.alias(REASON))

    row_id = pl.concat_str([pl.lit(f"{source}:"), pl.col(ROW).cast(pl.String)])
    ids = pl.col(f["id"]).cast(pl.String) if "id" in f and f["id"] in schema else None
    tools: pl.Expr = pl.lit(None, pl.String)
    if "tools" in f and f["tools"] in schema:
        col = pl.col(f["tools"])
        text = col if schema[f["tools"]] == pl.String else _json_text(col)
        blank = text.str.strip_chars().is_in(["", "[]", "null"])
        tools = pl.when(col.is_not_null() & ~blank).then(text)
    consumed = {v for k, v in f.items() if k not in ("id", "role", "content")}
    if "id" in f and f["id"] == "id":
        consumed.add("id")
    originals = [c for c in schema if c != ROW]
    extras = [c for c in originals if c not in consumed]
    output = [
        pl.col("__sft_rest").cast(MESSAGES).alias("messages"),
        pl.col("__sft_system").alias("system"),
        tools.alias("tools"),
        (pl.coalesce(ids, row_id) if ids is not None else row_id).alias("id"),
        pl.lit(source).alias("source"),
        pl.col(ROW),
        *[pl.col(c).alias(f"{c}_orig" if c in CANONICAL else c) for c in extras],
    ]
    role_reason = pl.col(REASON).is_in(["unknown_role", "no_assistant_turn", "wrong_role_order"])
    detail = pl.when(role_reason).then(pl.col("__sft_names").list.join(","))
    return Normalized(lf, output, originals, detail)
