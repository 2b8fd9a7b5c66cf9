"""Token-length filtering of whole frames, with per-reason drop counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from sftfast.exceptions import ConfigError, SchemaError
from sftfast.expr import length_reason

__all__ = ["FilterStats", "LengthFilterResult", "length_filter", "normalize_fields"]

REASON = "sft_drop_reason"
ROW = "sft_row"

Bounds = tuple[int | None, int | None]


@dataclass(frozen=True)
class FilterStats:
    """What a filter did: ``rows_in == rows_kept + sum(dropped.values())``."""

    rows_in: int
    rows_kept: int
    dropped: dict[str, int]

    def __post_init__(self) -> None:
        if self.rows_in != self.rows_kept + sum(self.dropped.values()):
            raise AssertionError(f"rows unaccounted for in {self!r}")

    def summary(self) -> str:
        """A small table, one line per drop reason."""
        lines = [f"rows in:   {self.rows_in:>12,}", f"rows kept: {self.rows_kept:>12,}"]
        for reason, n in sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  dropped {reason:<24} {n:>12,}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LengthFilterResult:
    """Kept rows, rejected rows (with ``sft_drop_reason`` and ``sft_row``) and counts."""

    kept: pl.DataFrame
    rejected: pl.DataFrame
    stats: FilterStats


def normalize_fields(
    fields: Mapping[str, Any] | None, schema: Mapping[str, pl.DataType]
) -> dict[str, Bounds]:
    """Check ``fields`` against a schema: ``{column: (min, max)}``, ``None`` meaning unbounded."""
    if not fields:
        raise ConfigError("fields: expected at least one column, e.g. {'answer': (1, 2048)}")
    out: dict[str, Bounds] = {}
    for name, bounds in fields.items():
        if name not in schema:
            raise SchemaError(
                f"fields: column {name!r} not in the data; columns are {list(schema)}"
            )
        dtype = schema[name]
        if dtype not in (pl.String, pl.Binary):
            raise SchemaError(f"fields: column {name!r} must hold strings, got {dtype}")
        if bounds is None:
            bounds = (None, None)
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise ConfigError(f"fields[{name!r}]: expected (min, max), got {bounds!r}")
        lo, hi = bounds
        for v in (lo, hi):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"fields[{name!r}]: bounds must be ints >= 0 or None, got {v!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"fields[{name!r}]: min ({lo}) must be <= max ({hi})")
        out[name] = (lo, hi)
    return out


def length_filter(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    fields: Mapping[str, Bounds | None],
    tokenizer: Any,
    max_total: int | None = 4096,
    add_special_tokens: bool = False,
    drop_empty: bool = True,
) -> LengthFilterResult:
    """Keep the rows whose token lengths fit the bounds, and count why the others were dropped.

    Token counts are exact (identical to the ``tokenizers`` package). Rows whose byte length
    already decides the bounds are not tokenised at all.

    Parameters
    ----------
    frame
        Polars DataFrame or LazyFrame.
    fields
        ``{column: (min, max)}`` inclusive token bounds per text column; ``None`` = unbounded.
    tokenizer
        Anything :func:`sftfast.load_tokenizer` accepts.
    max_total
        Most tokens for all ``fields`` together (default 4096, common SFT practice); ``None``
        for no total bound.
    add_special_tokens
        Count the tokens the tokenizer's post-processor adds to each field.
    drop_empty
        Drop rows whose field is empty or whitespace (reason ``empty:<col>``).

    Returns
    -------
    LengthFilterResult
        ``kept`` (input columns), ``rejected`` (plus ``sft_drop_reason`` and ``sft_row``, the
        0-based input row) and ``stats``.

    Examples
    --------
    >>> import polars as pl, sftfast
    >>> df = pl.DataFrame({"question": ["Hi?", "", "Why?"], "answer": ["Hello.", "x", None]})
    >>> res = sftfast.length_filter(df, fields={"question": (1, 64), "answer": (1, 512)},
    ...                             tokenizer=sftfast.demo_tokenizer())
    >>> res.kept.height, res.stats.dropped
    (1, {'empty:question': 1, 'null:answer': 1})
    """
    if max_total is not None and (not isinstance(max_total, int) or max_total < 0):
        raise ConfigError(f"max_total: expected an int >= 0 or None, got {max_total!r}")
    lazy = frame.lazy()
    spec = normalize_fields(fields, lazy.collect_schema())
    reason = length_reason(
        spec,
        tokenizer,
        max_total=max_total,
        add_special_tokens=add_special_tokens,
        drop_empty=drop_empty,
    )
    marked = lazy.with_row_index(ROW).with_columns(reason).collect()
    dropped_mask = pl.col(REASON).is_not_null()
    kept = marked.filter(~dropped_mask).drop(ROW, REASON)
    rejected = marked.filter(dropped_mask)
    counts = rejected.group_by(REASON).len().sort(REASON)
    dropped = dict(zip(counts[REASON].to_list(), counts["len"].to_list(), strict=True))
    stats = FilterStats(rows_in=marked.height, rows_kept=kept.height, dropped=dropped)
    return LengthFilterResult(kept=kept, rejected=rejected, stats=stats)
