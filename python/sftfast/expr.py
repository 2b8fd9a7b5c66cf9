"""Polars expression plugins and the ``sft`` namespace.

>>> import polars as pl, sftfast
>>> tok = sftfast.demo_tokenizer()
>>> df = pl.DataFrame({"answer": ["hello world", None]})
>>> df.select(pl.col("answer").sft.token_count(tok)).to_series().to_list()[1] is None
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from polars.plugins import register_plugin_function

from sftfast.tokenizer import Tokenizer, load_tokenizer

__all__ = ["SftNamespace", "length_reason", "token_count"]

_LIB = Path(__file__).parent


def _plugin(name: str, args: list[pl.Expr], kwargs: dict[str, Any], *, elementwise: bool) -> pl.Expr:
    return register_plugin_function(
        plugin_path=_LIB,
        function_name=name,
        args=args,
        kwargs=kwargs,
        is_elementwise=elementwise,
    )


def _tok_kwargs(tokenizer: Any) -> dict[str, Any]:
    tok: Tokenizer = load_tokenizer(tokenizer)
    return {"tokenizer": tok.key, "path": tok.path}


def token_count(
    expr: pl.Expr | str, tokenizer: Any, *, add_special_tokens: bool = False
) -> pl.Expr:
    """Exact token count of each string (UInt32; null stays null).

    Identical to ``len(tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids)``.
    Row-local, so it runs in lazy and streaming queries.

    Parameters
    ----------
    expr
        A string column (expression or name).
    tokenizer
        Anything :func:`sftfast.load_tokenizer` accepts.
    add_special_tokens
        Also count what the tokenizer's post-processor adds (BOS/EOS).
    """
    e = pl.col(expr) if isinstance(expr, str) else expr
    kwargs = _tok_kwargs(tokenizer) | {"add_special_tokens": add_special_tokens}
    return _plugin("token_count", [e], kwargs, elementwise=True)


def length_reason(
    fields: dict[str, tuple[int | None, int | None]],
    tokenizer: Any,
    *,
    max_total: int | None = 4096,
    add_special_tokens: bool = False,
    drop_empty: bool = True,
) -> pl.Expr:
    """The reason each row fails the token-length bounds, or null when it passes.

    Reasons: ``null:<col>``, ``invalid_utf8:<col>``, ``empty:<col>``, ``too_short:<col>``,
    ``too_long:<col>``, ``too_long:total``. Row-local: usable in streaming queries and sinks.
    See :func:`sftfast.length_filter` for the parameters.
    """
    spec = [(name, lo, hi) for name, (lo, hi) in fields.items()]
    kwargs = _tok_kwargs(tokenizer) | {
        "fields": spec,
        "max_total": max_total,
        "add_special_tokens": add_special_tokens,
        "drop_empty": drop_empty,
    }
    return _plugin(
        "length_reason", [pl.col(name) for name in fields], kwargs, elementwise=True
    ).alias("sft_drop_reason")


@pl.api.register_expr_namespace("sft")
class SftNamespace:
    """``pl.col(...).sft``: sftfast operations on a column."""

    def __init__(self, expr: pl.Expr) -> None:
        self._expr = expr

    def token_count(self, tokenizer: Any, *, add_special_tokens: bool = False) -> pl.Expr:
        """Exact token count per row; see :func:`sftfast.token_count`."""
        return token_count(self._expr, tokenizer, add_special_tokens=add_special_tokens)

    def minhash(self, **kwargs: Any) -> pl.Expr:
        """MinHash signature per row (list of UInt32); see :func:`sftfast.minhash`."""
        from sftfast.dedup import minhash

        return minhash(self._expr, **kwargs)

    def render(self, tokenizer: Any, **kwargs: Any) -> pl.Expr:
        """Chat-template rendering per row (struct of ``input_ids``, ``labels``,
        ``render_error``); see :func:`sftfast.render_expr`."""
        from sftfast.render import render_expr

        return render_expr(self._expr, tokenizer, **kwargs)

    def exact_key(self, **kwargs: Any) -> pl.Expr:
        """Normalised exact-dedup key per row; see :func:`sftfast.exact_key`."""
        from sftfast.dedup import exact_key

        return exact_key(self._expr, **kwargs)
