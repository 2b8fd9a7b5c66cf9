"""Render conversations with a chat template into ``input_ids`` and ``labels`` (in Rust).

The template is the model's own (``chat_template`` in ``tokenizer_config.json``), a Jinja string,
a file, or a built-in one (``"chatml"``, ``"llama3"``, ``"phi3"``). It runs in minijinja,
configured like transformers; the whole text is tokenised once and assistant spans are mapped
to tokens as transformers' ``return_assistant_tokens_mask`` maps them. See
``rust/src/render.rs`` for the algorithm.

>>> import polars as pl, sftfast
>>> tok = sftfast.demo_tokenizer()
>>> df = pl.DataFrame({"messages": [[{"role": "user", "content": "Hi"},
...                                  {"role": "assistant", "content": "Hello!"}]]})
>>> out = sftfast.render(df, tok, template="chatml")
>>> row = out.frame.row(0, named=True)
>>> len(row["input_ids"]) == len(row["labels"]), out.rejected.height
(True, 0)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
from sftfast.exceptions import ConfigError, SchemaError
from sftfast.tokenizer import Tokenizer, load_tokenizer

__all__ = ["BUILTIN_TEMPLATES", "RenderResult", "builtin_template", "render", "render_expr"]

BUILTIN_TEMPLATES: dict[str, str] = dict(_native.builtin_templates())
TRAIN_ON = ("assistant", "last_assistant", "all")
END_OF_TURN = ("template", "include", "exclude")
ERROR = "render_error"


def builtin_template(name: str) -> str:
    """The Jinja source of a built-in template (with ``{% generation %}`` blocks)."""
    if name not in BUILTIN_TEMPLATES:
        raise ConfigError(f"template: expected one of {sorted(BUILTIN_TEMPLATES)}, got {name!r}")
    return BUILTIN_TEMPLATES[name]


def _token_text(v: Any) -> str:
    if isinstance(v, dict):
        return str(v.get("content", ""))
    return "" if v is None else str(v)


def _config(tok: Tokenizer) -> dict[str, Any]:
    config = dict(tok.config or {})
    if not config and tok.path is not None:
        side = Path(tok.path).with_name("tokenizer_config.json")
        if side.is_file():
            config = json.loads(side.read_text(encoding="utf-8"))
    return config


def _template(tok: Tokenizer, template: str | os.PathLike[str] | None) -> tuple[str, str, str]:
    """(source or built-in name, bos, eos)."""
    config = _config(tok)
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    if template is None:
        src = config.get("chat_template")
        if isinstance(src, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in src if isinstance(t, dict)}
            src = named.get("default")
        if not isinstance(src, str):
            raise ConfigError("template: the tokenizer has no chat_template (tokenizer_config."
                              f"json); pass one of {sorted(BUILTIN_TEMPLATES)} or a Jinja string")
        return src, bos, eos
    if isinstance(template, str) and template in BUILTIN_TEMPLATES:
        return template, bos, eos
    if isinstance(template, str) and ("{%" in template or "{{" in template):
        return template, bos, eos
    p = Path(template)
    if not p.is_file():
        raise ConfigError(f"template: {str(template)!r} is neither a built-in name "
                          f"({sorted(BUILTIN_TEMPLATES)}), Jinja source nor a file")
    return p.read_text(encoding="utf-8"), bos, eos


def render_expr(
    messages: pl.Expr | str,
    tokenizer: Any,
    *,
    template: str | os.PathLike[str] | None = None,
    system: pl.Expr | str | None = None,
    tools: pl.Expr | str | None = None,
    train_on: str = "assistant",
    end_of_turn: str = "template",
    add_generation_prompt: bool = False,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> pl.Expr:
    """A struct per row: ``input_ids`` (list of u32), ``labels`` (list of i32, −100 where not
    learned) and ``render_error`` (null, or why the row failed: ids and labels are then null).

    Row-local: usable in lazy and streaming queries (``pl.col("messages").sft.render(...)``).
    ``messages`` is a list of struct ``{role, content}``; ``system`` and ``tools`` (JSON text)
    are optional string columns. ``train_on``: ``assistant``, ``last_assistant`` or ``all``.
    ``end_of_turn``: ``template`` (as its generation blocks mark; learned when it has none),
    ``include`` or ``exclude`` the special token that ends an assistant turn.
    """
    if train_on not in TRAIN_ON:
        raise ConfigError(f"train_on: expected one of {TRAIN_ON}, got {train_on!r}")
    if end_of_turn not in END_OF_TURN:
        raise ConfigError(f"end_of_turn: expected one of {END_OF_TURN}, got {end_of_turn!r}")
    from sftfast.expr import _plugin

    tok = load_tokenizer(tokenizer)
    src, bos, eos = _template(tok, template)
    _native.check_template(BUILTIN_TEMPLATES.get(src, src))  # ConfigError now, not mid-query
    args = [pl.col(messages) if isinstance(messages, str) else messages]
    for extra in (system, tools):
        if extra is not None:
            args.append(pl.col(extra) if isinstance(extra, str) else extra)
    kwargs = {
        "tokenizer": tok.key, "path": tok.path, "template": src,
        "bos_token": bos if bos_token is None else bos_token,
        "eos_token": eos if eos_token is None else eos_token,
        "train_on": train_on, "end_of_turn": end_of_turn,
        "add_generation_prompt": add_generation_prompt,
        "has_system": system is not None, "has_tools": tools is not None,
    }
    return _plugin("render", args, kwargs, elementwise=True)


@dataclass(frozen=True)
class RenderResult:
    """Rendered rows (``input_ids``, ``labels`` added) and the rows that failed, with
    ``sft_drop_reason`` = ``render_error: <why>``."""

    frame: pl.DataFrame | pl.LazyFrame
    rejected: pl.DataFrame | pl.LazyFrame


def render(
    frame: pl.DataFrame | pl.LazyFrame,
    tokenizer: Any,
    *,
    template: str | os.PathLike[str] | None = None,
    messages: str = "messages",
    system: str | None = "system",
    tools: str | None = "tools",
    train_on: str = "assistant",
    end_of_turn: str = "template",
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> RenderResult:
    """Render the ``messages`` column (the canonical form of :func:`sftfast.read`).

    ``system`` and ``tools`` are used when the frame has those columns. A row the template
    rejects (``raise_exception``), with a null turn or bad tools JSON goes to ``rejected`` with
    its reason; the run goes on. See :func:`render_expr` for the options.
    """
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    names = lf.collect_schema().names()
    if messages not in names:
        raise SchemaError(f"column {messages!r} not in the data; columns: {names}")
    expr = render_expr(messages, tokenizer, template=template,
                       system=system if system in names else None,
                       tools=tools if tools in names else None, train_on=train_on,
                       end_of_turn=end_of_turn, bos_token=bos_token, eos_token=eos_token)
    out = lf.with_columns(expr.alias("_sft_render")).with_columns(
        pl.col("_sft_render").struct.field("input_ids"),
        pl.col("_sft_render").struct.field("labels"),
        pl.col("_sft_render").struct.field(ERROR).alias("_sft_error"),
    ).drop("_sft_render")
    if isinstance(frame, pl.DataFrame):
        out = out.collect().lazy()
    kept = out.filter(pl.col("_sft_error").is_null()).drop("_sft_error")
    rejected = out.filter(pl.col("_sft_error").is_not_null()).select(
        pl.exclude("_sft_error", "input_ids", "labels"),
        pl.concat_str(pl.lit("render_error: "), pl.col("_sft_error")).alias("sft_drop_reason"))
    if isinstance(frame, pl.DataFrame):
        return RenderResult(kept.collect(), rejected.collect())
    return RenderResult(kept, rejected)
