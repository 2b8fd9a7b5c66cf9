"""Category rebalancing: exact, deterministic mix plans over any number of rows.

Three passes over the data, each holding O(categories) in memory (the Rust core does the
arithmetic; see ``rust/src/rebalance``):

1. a streaming group-by of (raw label, hash bucket) → rows and units, from which the core
   normalises the labels, derives the targets and, per category, the hash bucket where the
   selection stops;
2. a streaming filter that collects only the rows of those buckets (about 1/4096 of the data),
   from which the core fixes the exact hash threshold;
3. the selection itself, returned as a lazy query: every row of a category is kept
   ``base`` times, plus once more if its keyed hash is at most the threshold.

The keyed hash is xxh3-64 of the row's key columns with ``seed``, so the selected rows depend
on the data, the parameters and the seed only, not on file order, partitioning or threads.

>>> import polars as pl, sftfast
>>> df = pl.DataFrame({"id": range(100), "class": ["a"] * 90 + ["b"] * 10})
>>> out, plan = sftfast.rebalance(df, category="class", method="unimax", budget=40)
>>> plan.to_polars().select("category", "rows_before", "rows_after", "epochs").rows()
[('a', 90, 20, 0.2222222222222222), ('b', 10, 20, 2.0)]
>>> out.collect().group_by("class").len().sort("class").rows()
[('a', 20), ('b', 20)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import polars as pl

from sftfast import _native
from sftfast.exceptions import ConfigError, SchemaError
from sftfast.expr import _plugin, token_count

__all__ = ["METHODS", "UNITS", "MixPlan", "Rebalanced", "rebalance"]

METHODS = ("proportional", "cap", "temperature", "unimax", "weights", "counts")
UNITS = ("rows", "tokens", "label_tokens")
REPEAT = "sft_repeat"
_BUCKET_SHIFT = 1 << 52  # 64 - 12 bucket bits (rust/src/rebalance/select.rs)
_DEFAULT_LENGTH = {"tokens": "sft_tokens", "label_tokens": "sft_label_tokens"}


@dataclass(frozen=True)
class MixPlan:
    """What a rebalance does, per category: before, target, after and epochs.

    ``table`` has one row per (normalised) category; ``merges`` maps a category to the raw
    labels merged into it when they differ from its name; ``dropped`` counts rows left out for
    a reason (``null_category``, ``null:<length column>``). Units are ``unit`` (rows, tokens or
    label tokens).
    """

    method: str
    unit: str
    budget: int | None
    max_epochs: float
    seed: int
    table: pl.DataFrame
    merges: dict[str, list[str | None]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        """Rows read, dropped ones included."""
        return int(self.table["rows_before"].sum()) + sum(self.dropped.values())

    @property
    def rows_out(self) -> int:
        """Rows in the result, repeats included."""
        return int(self.table["rows_after"].sum())

    def to_polars(self) -> pl.DataFrame:
        """The per-category table: rows and units before, shares, target, after, epochs."""
        t = self.table
        u = self.unit
        cols: list[Any] = [
            pl.col("category"),
            pl.col("rows_before"),
        ]
        if u != "rows":
            cols.append(pl.col("units_before").alias(f"{u}_before"))
        cols += [
            (pl.col("units_before") / pl.col("units_before").sum()).alias("share_before"),
            pl.col("target").alias("target" if u == "rows" else f"target_{u}"),
            pl.col("rows_after"),
        ]
        if u != "rows":
            cols.append(pl.col("units_after").alias(f"{u}_after"))
        cols += [
            (pl.col("units_after") / pl.col("units_after").sum()).alias("share_after"),
            pl.when(pl.col("units_before") > 0)
            .then(pl.col("units_after") / pl.col("units_before"))
            .alias("epochs"),
        ]
        return t.select(cols)

    def summary(self) -> str:
        """A readable table (also the ``repr``)."""
        df = self.to_polars()
        head = (
            f"MixPlan(method={self.method!r}, unit={self.unit!r}, budget={self.budget}, "
            f"max_epochs={self.max_epochs}, seed={self.seed}): {self.rows_in:,} rows in, "
            f"{self.rows_out:,} out"
        )
        names = df.columns
        rows = [names] + [[_fmt(v) for v in r] for r in df.rows()]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(names))]
        lines = [head]
        for r in rows:
            lines.append("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                                   for i, (v, w) in enumerate(zip(r, widths))).rstrip())
        for name, labels in self.merges.items():
            lines.append(f"merged into {name!r}: {labels!r}")
        for reason, n in self.dropped.items():
            lines.append(f"dropped {reason}: {n:,} rows")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


class Rebalanced(NamedTuple):
    """The selected rows (lazy; ``None`` on a dry run) and the plan."""

    frame: pl.LazyFrame | None
    plan: MixPlan


def rebalance(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    category: str | None = None,
    category_column: str | None = None,
    method: str = "unimax",
    budget: int | None = None,
    unit: str = "rows",
    max_epochs: float = 4.0,
    temperature: float | None = None,
    cap: int | None = None,
    floor: int | None = None,
    weights: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    length_column: str | None = None,
    tokenizer: Any = None,
    text_columns: Sequence[str] | None = None,
    key: str | Sequence[str] | None = None,
    null_category: str | None = None,
    seed: int = 0,
    dry_run: bool = False,
) -> Rebalanced:
    """Select and repeat rows so that each category gets the volume a method asks for.

    Parameters
    ----------
    frame
        The rows; a LazyFrame from a scan streams (three passes, memory O(categories)).
    category, category_column
        The category column (either name). Labels are normalised (Unicode NFKC, trimmed)
        before counting; the output column holds the normalised label.
    method
        ``proportional``, ``cap`` (with ``cap``, optional ``floor``), ``temperature`` (with
        ``temperature``), ``unimax``, ``weights`` (a mapping category → weight) or ``counts``
        (a mapping category → units).
    budget
        Total units wanted (``proportional``, ``temperature``, ``unimax``, ``weights``);
        default: the input total.
    unit
        ``rows``, ``tokens`` or ``label_tokens``: what targets count.
    max_epochs
        Most copies of a category's units; a row appears ``⌊e⌋`` or ``⌈e⌉`` times for a
        category at ``e`` epochs, never more than ``⌈max_epochs⌉``.
    length_column
        Per-row units for ``tokens`` / ``label_tokens`` (default ``sft_tokens`` /
        ``sft_label_tokens``). For ``tokens``, when absent, ``tokenizer`` and ``text_columns``
        compute it.
    key
        Columns whose keyed hash orders rows for selection (strings, numbers, booleans);
        default ``id`` if present, else every string and numeric column except the category and
        sftfast's own ``sft_*`` columns (so file names and row numbers do not matter).
    null_category
        Put rows with a null category in this category; by default they are dropped and counted
        (``plan.dropped["null_category"]``).
    seed
        Selection seed.
    dry_run
        Compute the plan only.

    Returns
    -------
    Rebalanced
        ``(frame, plan)``: the selected rows as a LazyFrame (with ``sft_repeat``, the copy
        number from 0) and the :class:`MixPlan`.

    Examples
    --------
    >>> import polars as pl, sftfast
    >>> df = pl.DataFrame({"id": range(6), "c": ["x", "x", "x", "x", "y", None]})
    >>> _, plan = sftfast.rebalance(df, category="c", method="proportional", budget=3,
    ...                             dry_run=True)
    >>> plan.table.select("category", "target").rows(), plan.dropped
    ([('x', 2), ('y', 1)], {'null_category': 1})
    """
    cat = _category_name(category, category_column)
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {METHODS}, got {method!r}")
    if unit not in UNITS:
        raise ConfigError(f"unit: expected one of {UNITS}, got {unit!r}")
    _check_int("seed", seed, hi=2**64 - 1)
    if budget is not None:
        _check_int("budget", budget)
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    if not isinstance(lf, pl.LazyFrame):
        raise ConfigError(f"frame: expected a polars DataFrame or LazyFrame, got {type(frame)}")
    schema = lf.collect_schema()
    if cat not in schema:
        raise SchemaError(f"category: column {cat!r} not in the data; columns are {list(schema)}")
    label = pl.col(cat).cast(pl.String)
    units, length_name = _units(lf, schema, unit, length_column, tokenizer, text_columns)
    keys = _key_exprs(schema, key, cat)
    seed_bits = {"seed": seed - 2**64 if seed >= 2**63 else seed}
    bucket = _plugin("keyed_bucket", keys, seed_bits, elementwise=True)

    # Pass 1: rows and units per (raw label, bucket); rows with null units counted apart.
    agg = (
        lf.select(label=label, bucket=bucket, units=units)
        .group_by("label", "bucket", pl.col("units").is_null().alias("null_units"))
        .agg(rows=pl.len().cast(pl.UInt64), units=pl.col("units").sum().cast(pl.UInt64))
        .collect(engine="streaming")
    )
    null_units = int(agg.filter("null_units")["rows"].sum())
    agg = agg.filter(~pl.col("null_units"))
    native = _native.rebalance_plan(
        agg["label"], agg["bucket"], agg["rows"], agg["units"],
        method=method, budget=budget, max_epochs=float(max_epochs),
        temperature=None if temperature is None else float(temperature),
        cap=cap, floor=floor,
        weights=None if weights is None else [(str(k), float(v)) for k, v in weights.items()],
        counts=None if counts is None else [(str(k), int(v)) for k, v in counts.items()],
        null_category=null_category,
    )
    raw: list[str | None] = agg["label"].unique().to_list()
    if None not in raw:
        raw.append(None)
    raw_idx = native.category_of(raw)

    # Pass 2: the rows of each category's boundary bucket fix the exact threshold.
    table = native.table()
    sel = _selection(raw, raw_idx, table, seed_bits)
    if any(b is not None for b in sel["boundary"]):
        in_edge = _plugin("rebalance_boundary", [label, *keys], sel, elementwise=True)
        # Filter first: units (maybe token counts) are computed for the few boundary rows only.
        edge = (
            lf.filter(in_edge.is_not_null())
            .select(label=label, h=in_edge, u=units)
            .filter(pl.col("u").is_not_null())
            .collect(engine="streaming")
        )
        known = [(r, i) for r, i in zip(raw, raw_idx) if r is not None and i is not None]
        cats = edge["label"].replace_strict([r for r, _ in known], [i for _, i in known],
                                            default=None, return_dtype=pl.UInt32)
        null_i = raw_idx[raw.index(None)]
        if null_i is not None:
            cats = pl.select(pl.when(edge["label"].is_null()).then(pl.lit(null_i, pl.UInt32))
                             .otherwise(cats)).to_series()
        native.resolve(cats, edge["h"], edge["u"].cast(pl.UInt64))
    else:
        empty = pl.Series([], dtype=pl.UInt64)
        native.resolve(pl.Series([], dtype=pl.UInt32), empty, empty)
    table = native.table()
    dropped = {}
    null_rows, _ = native.null_dropped()
    if null_rows:
        dropped["null_category"] = int(null_rows)
    if null_units:
        dropped[f"null:{length_name}"] = null_units
    plan = MixPlan(
        method=method, unit=unit, budget=budget, max_epochs=float(max_epochs), seed=seed,
        table=table.drop("labels", "boundary"),
        merges={n: ls for n, ls in zip(table["category"], table["labels"].to_list())
                if ls != [n]},
        dropped=dropped,
    )
    if dry_run:
        return Rebalanced(None, plan)

    # Pass 3 (lazy): base copies plus one for hashes up to the threshold.
    sel = _selection(raw, raw_idx, table, seed_bits)
    copies = _plugin("rebalance_copies", [label, *keys], sel, elementwise=True)
    tmp = "__sft_copies"
    keep = pl.col(tmp) > 0
    if length_name is not None and length_name in schema:  # computed counts are never null
        keep = keep & units.is_not_null()
    out = lf.with_columns(copies.alias(tmp)).filter(keep)
    if plan.merges or (null_category is not None and None in raw):
        names = [None if i is None else table["category"][i] for i in raw_idx]
        known = [(r, n) for r, n in zip(raw, names) if r is not None]
        renamed = label.replace_strict([r for r, _ in known], [n for _, n in known],
                                       default=None, return_dtype=pl.String)
        if null_category is not None:
            renamed = pl.when(label.is_null()).then(pl.lit(names[raw.index(None)])).otherwise(
                renamed)
        out = out.with_columns(renamed.alias(cat))
    most = int(table["base_copies"].max() or 0) + int(table["threshold"].is_not_null().any())
    if most > 1:
        out = out.with_columns(
            pl.int_ranges(0, pl.col(tmp), dtype=pl.UInt32).alias(REPEAT)
        ).explode(REPEAT)
    else:
        out = out.with_columns(pl.lit(0, pl.UInt32).alias(REPEAT))
    return Rebalanced(out.drop(tmp), plan)


def _selection(raw: list[str | None], raw_idx: list[int | None], table: pl.DataFrame,
               seed_bits: dict[str, int]) -> dict[str, Any]:
    """Plugin kwargs: per raw label, its category's base copies, threshold and boundary."""
    pairs = [(r, i) for r, i in zip(raw, raw_idx) if i is not None]
    base, thr, bnd = (table[c].to_list() for c in ("base_copies", "threshold", "boundary"))
    return seed_bits | {
        "labels": [r for r, _ in pairs],
        "base": [int(base[i]) for _, i in pairs],
        "threshold": [None if thr[i] is None else (thr[i] - 2**64 if thr[i] >= 2**63 else thr[i])
                      for _, i in pairs],
        "boundary": [bnd[i] for _, i in pairs],
    }


def _category_name(category: str | None, category_column: str | None) -> str:
    if category is not None and category_column is not None and category != category_column:
        raise ConfigError("category and category_column name the same thing: give one")
    name = category if category is not None else category_column
    if not isinstance(name, str):
        raise ConfigError(f"category: expected a column name, got {name!r}")
    return name


def _check_int(name: str, v: object, *, hi: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (hi is not None and v > hi):
        raise ConfigError(f"{name}: expected an int >= 0{f' and <= {hi}' if hi else ''}, got {v!r}")


def _units(
    lf: pl.LazyFrame,
    schema: pl.Schema,
    unit: str,
    length_column: str | None,
    tokenizer: Any,
    text_columns: Sequence[str] | None,
) -> tuple[pl.Expr, str | None]:
    if unit == "rows":
        if length_column is not None:
            raise ConfigError("length_column: not used with unit='rows'")
        return pl.lit(1, pl.UInt64), None
    name = length_column or _DEFAULT_LENGTH[unit]
    if name in schema:
        if not schema[name].is_integer():
            raise SchemaError(f"length_column: {name!r} must hold integers, got {schema[name]}")
        return pl.col(name).cast(pl.UInt64), name
    if unit == "tokens" and tokenizer is not None:
        if not text_columns:
            raise ConfigError("text_columns: needed with tokenizer= to count tokens per row")
        missing = [c for c in text_columns if c not in schema]
        if missing:
            raise SchemaError(f"text_columns: {missing} not in the data; columns are {list(schema)}")
        total = pl.sum_horizontal(
            [token_count(c, tokenizer).fill_null(0).cast(pl.UInt64) for c in text_columns]
        )
        return total, name
    hint = ("pass length_column=..., or tokenizer=... and text_columns=[...]"
            if unit == "tokens" else "pass length_column=... (label tokens come from rendering)")
    raise SchemaError(f"unit={unit!r}: no column {name!r} of per-row {unit} in the data; {hint}")


def _key_exprs(schema: pl.Schema, key: str | Sequence[str] | None, cat: str) -> list[pl.Expr]:
    if key is None:
        names = ["id"] if "id" in schema else [
            c for c, t in schema.items()
            if c != cat and not c.startswith("sft_") and _hashable(t)
        ]
        if not names:
            raise SchemaError(
                "key: no id column and no string or numeric column to hash; pass key=[...]"
            )
    else:
        names = [key] if isinstance(key, str) else list(key)
        if not names:
            raise ConfigError("key: expected at least one column")
    exprs = []
    for c in names:
        if c not in schema:
            raise SchemaError(f"key: column {c!r} not in the data; columns are {list(schema)}")
        t = schema[c]
        if not _hashable(t):
            raise SchemaError(
                f"key: column {c!r} has type {t}; use string, binary, numeric or boolean columns"
            )
        if t in (pl.String, pl.Binary):
            exprs.append(pl.col(c))
        elif t.is_integer():
            exprs.append(pl.col(c).cast(pl.Int64, wrap_numerical=True))
        else:
            exprs.append(pl.col(c).cast(pl.String))
    return exprs


def _hashable(t: pl.DataType) -> bool:
    return (t in (pl.String, pl.Binary, pl.Boolean) or t.is_numeric()
            or isinstance(t, (pl.Categorical, pl.Enum)))
