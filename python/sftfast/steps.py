"""The steps of a :class:`~sftfast.Pipeline`, each a thin composition of the public functions.

A step reads the rows still alive (``rows.parquet`` of :class:`Read` minus every row an earlier
step dropped), writes what it decided into its own folder and returns its counts. Rows are never
copied from step to step: a filtering step writes only ``dropped.parquet`` (``sft_id``,
``sft_drop_reason``), :class:`Rebalance` writes ``selection.parquet`` (``sft_id``, copies),
:class:`Render` writes ``rendered.arrow`` (Arrow IPC: ``sft_id``, ``input_ids``, ``labels``;
the shard writer reads token lists from IPC ~4x cheaper than from nested Parquet) and
:class:`WriteShards` writes the shards. Every step streams except the global ones, which keep
per alive row: :class:`ExactDedup` 16 bytes (id and key); :class:`NearDedup` 17 bytes while
signing (id and text length; the band keys go to files in its folder), then 48 for the two
bands sorted at a time; :class:`Rebalance` ~12 bytes; :class:`WriteShards` ~48 bytes per
sample with ``packing="bfd"`` (writer, sample ids and the rebalance copies; the tokens wait
on disk). The steps that feed a Python loop
(near dedup's MinHash, the shard writer) read the step files one row group (65,536 rows) at a
time: a Polars streaming query feeding a slow consumer reads gigabytes ahead of it
(pola-rs/polars#26432). Measured at 20M rows in ``benches/RESULTS.md``.

The order is fixed where it matters: :class:`Read` first; filters and dedups in any order;
then :class:`Rebalance`, :class:`Render` and :class:`WriteShards`, each at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from sftfast._steputil import (
    BATCH_ROWS,
    CODECS,
    ID,
    REASON,
    _bounds,
    _counts,
    _examples,
    _histograms,
    _jsonable,
    _length_reason,
    _row_fill,
    _s_curve,
    _sink,
    _sink_ipc,
    conversation_text,
    step_slices,
)
from sftfast.exceptions import ConfigError
from sftfast.expr import _plugin
from sftfast.tokenizer import Tokenizer

__all__ = [
    "STEPS",
    "ExactDedup",
    "LengthFilter",
    "NearDedup",
    "Read",
    "Rebalance",
    "Render",
    "Step",
    "StepContext",
    "StepOutcome",
    "WriteShards",
]

COPIES = "sft_copies"


@dataclass
class StepContext:
    """What a step sees: the run folder, its own (temporary) folder, the earlier steps' files."""

    out: Path
    folder: Path
    seed: int
    tokenizer_source: Any
    rows: Path | None = None
    dropped: list[Path] = field(default_factory=list)
    selection: Path | None = None
    rendered: Path | None = None
    compression: str = "none"
    _tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The pipeline's tokenizer, loaded on first use."""
        if self._tokenizer is None:
            from sftfast.tokenizer import load_tokenizer

            if self.tokenizer_source is None:
                raise ConfigError("tokenizer: this pipeline needs one (a tokenizer.json path, "
                                  "a model directory or 'demo')")
            if self.tokenizer_source == "demo":
                from sftfast.demo import demo_tokenizer

                self._tokenizer = demo_tokenizer()
            else:
                self._tokenizer = load_tokenizer(self.tokenizer_source)
        return self._tokenizer

    def dropped_ids(self) -> pl.Series:
        """Every row id dropped so far (UInt64)."""
        if not self.dropped:
            return pl.Series(ID, [], dtype=pl.UInt64)
        return pl.concat([pl.scan_parquet(p).select(ID) for p in self.dropped]).collect()[ID]

    def alive(self) -> pl.LazyFrame:
        """The rows no step has dropped, in row-id order (streams)."""
        if self.rows is None:
            raise ConfigError("steps: the first step must be 'read'")
        lf = (pl.scan_parquet(self.rows).filter(pl.col(REASON).is_null())
              .drop(REASON, "sft_drop_detail", "sft_raw"))
        gone = self.dropped_ids()
        if len(gone):
            lf = lf.filter(~pl.col(ID).is_in(gone.implode()))
        return lf

    def alive_schema(self) -> pl.Schema:
        """The columns of :meth:`alive` (without reading which rows were dropped)."""
        if self.rows is None:
            raise ConfigError("steps: the first step must be 'read'")
        return (pl.scan_parquet(self.rows).drop(REASON, "sft_drop_detail", "sft_raw")
                .collect_schema())

    def alive_batches(self, build: Callable[[pl.LazyFrame], pl.LazyFrame]
                      ) -> Iterator[pl.DataFrame]:
        """:meth:`alive` in batches, ``build`` applied to each and collected on its own (for a
        Python consumer: memory stays one batch). Relies on ``sft_id`` being the row number of
        ``rows.parquet``, as :class:`Read` writes it."""
        if self.rows is None:
            raise ConfigError("steps: the first step must be 'read'")
        gone = np.sort(self.dropped_ids().to_numpy())
        for start, stop, lf in step_slices(self.rows):
            lf = lf.filter(pl.col(REASON).is_null()).drop(REASON, "sft_drop_detail", "sft_raw")
            lo, hi = np.searchsorted(gone, [start, stop])
            if hi > lo:
                lf = lf.filter(~pl.col(ID).is_in(pl.Series(gone[lo:hi]).implode()))
            yield build(lf).collect()


@dataclass
class StepOutcome:
    """Counts of one step: ``rows_in + added == rows_out + sum(dropped.values())``."""

    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    added: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str) -> None:
        lost = self.rows_in + self.added - self.rows_out - sum(self.dropped.values())
        if lost:
            raise AssertionError(f"step {name}: {lost} rows unaccounted for in {self!r}")


class Step:
    """A pipeline step: its config name, its options (keyword-only) and what it does."""

    name: ClassVar[str] = ""
    uses_tokenizer: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def config(self) -> dict[str, Any]:
        """The step as it appears in a config file (JSON-serialisable)."""
        return {self.name: {k: _jsonable(v) for k, v in self.params.items()}}

    def progress_per_row(self) -> int:
        """How often the Rust kernels' progress counter moves per row (0: it does not)."""
        return 0

    def inputs(self) -> list[dict[str, Any]]:
        """Files this step reads from outside the run (fingerprinted by size and mtime)."""
        return []

    def run(self, ctx: StepContext) -> StepOutcome:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class Read(Step):
    """Read files into canonical rows (:func:`sftfast.read`): ``paths`` plus its options
    ``format``, ``schema``, ``roles`` and ``strict``. One streaming pass writes every parsed row
    to ``rows.parquet`` with its reject reason (null = kept); rows that do not parse go to
    ``rejects.parquet`` with file, line and reason."""

    name = "read"

    def __init__(self, paths: Any, *, format: str | None = None,
                 schema: str | dict[str, str] | None = None,
                 roles: dict[str, str] | None = None, strict: bool = False) -> None:
        super().__init__(paths=paths, format=format, schema=schema, roles=roles, strict=strict)

    def inputs(self) -> list[dict[str, Any]]:
        from sftfast.reader import _expand

        files = _expand(self.params["paths"])
        return [{"path": str(p.resolve()), "size": p.stat().st_size,
                 "mtime_ns": p.stat().st_mtime_ns} for p in files]

    def progress_per_row(self) -> int:
        return 1

    def estimate_rows(self) -> int | None:
        """Rows in the inputs, when cheap to count (JSON Lines lines, Parquet metadata)."""
        from sftfast.cli import _count_rows

        return _count_rows([f["path"] for f in self.inputs()])

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.exceptions import InputError
        from sftfast.reader import scan_marked

        p = self.params
        frame, early, schemas, cleanup = scan_marked(p["paths"], format=p["format"],
                                                     schema=p["schema"], roles=p["roles"])
        rows = ctx.folder / "rows.parquet"
        tap = _plugin("progress_tap", [pl.col("sft_row")], {}, elementwise=True)
        try:
            _sink(frame.with_row_index(ID).with_columns(pl.col(ID).cast(pl.UInt64),
                                                        tap.alias("sft_row")),
                  rows, ctx.compression)
        finally:
            cleanup()
        if early.height:
            early.write_parquet(ctx.folder / "rejects.parquet")
        per = (pl.scan_parquet(rows).group_by("source", REASON).len().collect()
               .vstack(early.group_by("source", pl.col("reason").alias(REASON)).len()
                       .cast({"len": pl.UInt32}))
               .sort("source", REASON, nulls_last=False))
        bad = per.filter(pl.col(REASON).is_not_null())
        if p["strict"] and bad.height:
            first = (pl.scan_parquet(rows).filter(pl.col(REASON).is_not_null())
                     .select("source", pl.col("sft_row").alias("row"), pl.col(REASON).alias(
                         "reason")).collect().vstack(early.select("source", "row", "reason"))
                     .sort("source", "row").row(0))
            raise InputError(f"{first[0]}: row {first[1]}: {first[2]} (strict)")
        files: dict[str, Any] = {}
        for source, reason, n in per.iter_rows():
            f = files.setdefault(source, {"rows_in": 0, "rows_kept": 0, "rejected": {}})
            f["rows_in"] += n
            if reason is None:
                f["rows_kept"] += n
            else:
                f["rejected"][reason] = f["rejected"].get(reason, 0) + n
        total = int(per["len"].sum())
        kept = int(per.filter(pl.col(REASON).is_null())["len"].sum())
        dropped = {str(r): int(n)
                   for r, n in bad.group_by(REASON).agg(pl.col("len").sum()).iter_rows()}
        return StepOutcome(total, kept, dict(sorted(dropped.items())), report={
            "files": files, "schemas": {k: v.schema for k, v in schemas.items()}})


class LengthFilter(Step):
    """Drop rows whose token counts fall outside bounds: ``prompt`` (system and non-assistant
    turns), ``response`` (assistant turns), ``fields`` (other string columns) and
    ``max_total`` (all of them together). Counts are exact, with the pipeline's tokenizer and
    without template scaffolding; reasons are those of :func:`sftfast.length_reason`
    (``empty:prompt``, ``too_short:response``, ``too_long:total``, ...). The step records the
    token-length histograms before and after filtering."""

    name = "length_filter"
    uses_tokenizer = True

    def __init__(self, *, prompt: Any = (1, 4096), response: Any = (1, 4096),
                 fields: dict[str, Any] | None = None, max_total: int | None = 4096,
                 drop_empty: bool = True) -> None:
        bounds = {"prompt": _bounds("prompt", prompt), "response": _bounds("response", response)}
        for k, v in (fields or {}).items():
            bounds[k] = _bounds(k, v)
        if max_total is not None and (not isinstance(max_total, int) or max_total < 0):
            raise ConfigError(f"length_filter.max_total: expected an int >= 0 or null, "
                              f"got {max_total!r}")
        super().__init__(prompt=prompt, response=response, fields=fields, max_total=max_total,
                         drop_empty=drop_empty)
        self.bounds = bounds

    def progress_per_row(self) -> int:
        return len(self.bounds)

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.expr import token_count

        lf = ctx.alive()
        schema = lf.collect_schema()
        tok = ctx.tokenizer
        texts = {k: conversation_text(schema, k) for k in self.bounds}
        counts = {k: token_count(pl.col(f"t_{k}"), tok).alias(f"n_{k}") for k in texts}
        total = pl.sum_horizontal([pl.col(f"n_{k}") for k in self.bounds]).alias("n_total")
        reason = _length_reason(self.bounds, total, self.params["max_total"],
                                self.params["drop_empty"])
        marks = ctx.folder / "marks.parquet"
        _sink(lf.select(pl.col(ID), *[e.alias(f"t_{k}") for k, e in texts.items()])
              .with_columns(*counts.values())
              .select(ID, *[f"n_{k}" for k in self.bounds], total, reason.alias(REASON)),
              marks, ctx.compression)
        m = pl.scan_parquet(marks)
        _sink(m.filter(pl.col(REASON).is_not_null()).select(ID, REASON),
              ctx.folder / "dropped.parquet", ctx.compression)
        stats = m.select(pl.len().alias("n"), pl.col(REASON).is_null().sum().alias("kept"),
                         pl.col("n_total").max().alias("max")).collect().row(0, named=True)
        dropped = _counts(m)
        hist = _histograms(m, int(stats["max"] or 0))
        hist["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        hist["bounds"]["max_total"] = self.params["max_total"]
        return StepOutcome(int(stats["n"]), int(stats["kept"]), dropped,
                           report={"lengths": hist})


class ExactDedup(Step):
    """Drop later copies of a row whose normalised text equals an earlier row's
    (:func:`sftfast.exact_key`; ``text`` as in :class:`LengthFilter`, default the whole
    conversation). Reason ``exact_duplicate``; ``dropped.parquet`` names the row kept
    (``dup_of``). With 64-bit keys (16 bytes a row in memory) a false match among 10⁸ rows has
    odds ~3·10⁻⁴; ``bits=128`` makes it nil for ~40 bytes a row."""

    name = "exact_dedup"

    def __init__(self, *, text: str | list[str] = "conversation", nfkc: bool = True,
                 lowercase: bool = True, fold_whitespace: bool = True,
                 fold_punctuation: bool = False, bits: int = 64) -> None:
        super().__init__(text=text, nfkc=nfkc, lowercase=lowercase,
                         fold_whitespace=fold_whitespace, fold_punctuation=fold_punctuation,
                         bits=bits)

    def progress_per_row(self) -> int:
        return 1

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.dedup import exact_key

        lf = ctx.alive()
        opts = {k: v for k, v in self.params.items() if k != "text"}
        key = exact_key(conversation_text(lf.collect_schema(), self.params["text"]), **opts)
        keys = lf.select(ID, key.alias("key")).collect(engine="streaming")
        first = keys["key"].is_first_distinct()
        dups = keys.filter(~first)
        firsts = keys.filter(first & keys["key"].is_in(dups["key"].implode()))
        dup = (dups.join(firsts.rename({ID: "dup_of"}), on="key", how="left",
                         maintain_order="left")
               .select(ID, pl.lit("exact_duplicate").alias(REASON), "dup_of"))
        n = keys.height
        del keys, first
        dup.write_parquet(ctx.folder / "dropped.parquet")
        return StepOutcome(n, n - dup.height, {"exact_duplicate": dup.height} if dup.height
                           else {}, report={"exact": {"rows": n, "duplicates": dup.height}})


class NearDedup(Step):
    """Drop near-duplicates found by MinHash-LSH (:func:`sftfast.near_dedup`; ``text`` as in
    :class:`LengthFilter`), keeping one row per cluster by ``keep``. Reason ``near_duplicate``;
    ``dropped.parquet`` also names each dropped row's cluster and kept row."""

    name = "near_dedup"

    def __init__(self, *, text: str | list[str] = "conversation", threshold: float = 0.8,
                 num_perm: int = 128, ngram: int = 5, num_bands: int | None = None,
                 verify_threshold: float | None = None, keep: str = "first",
                 score_column: str | None = None, examples: int = 5) -> None:
        super().__init__(text=text, threshold=threshold, num_perm=num_perm, ngram=ngram,
                         num_bands=num_bands, verify_threshold=verify_threshold, keep=keep,
                         score_column=score_column, examples=examples)

    def progress_per_row(self) -> int:
        return 1

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.dedup import _near_dedup_batches

        p = self.params
        text = conversation_text(ctx.alive_schema(), p["text"]).alias("text")
        score = p["score_column"]
        cols = [ID, text] if score is None else [ID, text, pl.col(score)]
        ids: list[pl.Series] = []

        def batches() -> Iterator[pl.DataFrame]:
            for batch in ctx.alive_batches(lambda b: b.select(cols)):
                ids.append(batch[ID])
                yield batch

        out, stats = _near_dedup_batches(
            batches(), threshold=p["threshold"], num_perm=p["num_perm"], ngram=p["ngram"],
            num_bands=p["num_bands"], seed=ctx.seed, verify_threshold=p["verify_threshold"],
            keep=p["keep"], score_column=score, spill_dir=str(ctx.folder))
        all_ids = pl.concat(ids) if ids else pl.Series(ID, [], pl.UInt64)
        pos = pl.DataFrame({ID: all_ids, "cluster": out["cluster"], "rep": out["representative"]})
        by_pos = all_ids.gather(pos["cluster"]), all_ids.gather(pos["rep"])
        marked = pos.with_columns(cluster=by_pos[0], rep=by_pos[1])
        dup = marked.filter(pl.col(ID) != pl.col("rep"))
        dup.select(ID, pl.lit("near_duplicate").alias(REASON), pl.col("cluster").alias("dup_cluster"),
                   pl.col("rep").alias("dup_of")).write_parquet(ctx.folder / "dropped.parquet")
        # A cluster of k > 1 rows keeps one: k - 1 duplicates (grouping those, not every row).
        sizes = (dup.group_by("cluster").len().with_columns(pl.col("len") + 1)
                 .sort(["len", "cluster"], descending=[True, False]))
        hist = sizes.group_by("len").len("clusters").sort("len")
        s = stats
        bands = s.rows_per_band
        report = {"rows": s.rows, "duplicates": s.duplicates, "clusters": sizes.height,
                  "threshold": p["threshold"], "num_perm": p["num_perm"], "bands": len(bands),
                  "rows_per_band": bands[-1] if bands else 0,
                  "candidate_edges": s.candidate_edges, "edges_rejected": s.edges_rejected,
                  "cluster_sizes": {str(k): int(v) for k, v in hist.iter_rows()},
                  "s_curve": _s_curve(bands),
                  "examples": _examples(ctx, marked, sizes.head(p["examples"]), p["text"])}
        return StepOutcome(s.rows, s.rows - dup.height,
                           {"near_duplicate": dup.height} if dup.height else {},
                           report={"near": report})


class Rebalance(Step):
    """Select and repeat rows per category (:func:`sftfast.rebalance`, same options). Rows not
    selected are dropped with reason ``rebalance:not_selected`` (or the plan's own reasons,
    e.g. ``null_category``); repeats count as added rows."""

    name = "rebalance"

    def __init__(self, *, category_column: str, **options: Any) -> None:
        bad = {"dry_run", "tokenizer", "category"} & set(options)
        if bad:
            raise ConfigError(f"rebalance: options {sorted(bad)} are set by the pipeline")
        super().__init__(category_column=category_column, **options)

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.rebalance import rebalance

        lf = ctx.alive()
        opts = dict(self.params)
        opts.setdefault("seed", ctx.seed)
        if opts.get("unit", "rows") != "rows" and "length_column" not in opts:
            opts["tokenizer"] = ctx.tokenizer
            opts.setdefault("text_columns", ["messages"])
        sel, plan = rebalance(lf, **opts)
        assert sel is not None
        path = ctx.folder / "selection.parquet"
        _sink(sel.group_by(ID, maintain_order=True).agg(pl.len().cast(pl.UInt32).alias(COPIES)),
              path, ctx.compression)
        s = pl.scan_parquet(path)
        cat = self.params["category_column"]
        why = pl.lit("rebalance:not_selected")
        if opts.get("null_category") is None:
            why = pl.when(pl.col(cat).is_null()).then(pl.lit("null_category")).otherwise(why)
        gone = lf.select(ID, cat).join(s.select(ID), on=ID, how="anti", maintain_order="left")
        _sink(gone.select(ID, why.alias(REASON)), ctx.folder / "dropped.parquet", ctx.compression)
        picked = s.select(pl.len().alias("distinct"), pl.col(COPIES).sum().alias("rows")).collect()
        distinct, rows_out = int(picked["distinct"][0]), int(picked["rows"][0] or 0)
        reasons = _counts(pl.scan_parquet(ctx.folder / "dropped.parquet"))
        table = plan.to_polars().rename({"rows_before": "available", "rows_after": "selected"})
        return StepOutcome(distinct + sum(reasons.values()), rows_out, reasons,
                           added=rows_out - distinct, report={"mix": {
                               "method": plan.method, "unit": plan.unit, "budget": plan.budget,
                               "max_epochs": plan.max_epochs, "table": table.to_dicts(),
                               "merges": plan.merges}})


class Render(Step):
    """Render each alive row once with a chat template (:func:`sftfast.render_expr`, same
    options: ``template``, ``train_on``, ``end_of_turn``, ...). Rows the template rejects are
    dropped with reason ``render_error: <why>``."""

    name = "render"
    uses_tokenizer = True

    def __init__(self, *, template: str | None = None, **options: Any) -> None:
        super().__init__(template=template, **options)

    def progress_per_row(self) -> int:
        return 1

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.render import render_expr

        lf = ctx.alive()
        names = lf.collect_schema().names()
        opts = dict(self.params)
        opts.setdefault("system", "system" if "system" in names else None)
        opts.setdefault("tools", "tools" if "tools" in names else None)
        expr = render_expr("messages", ctx.tokenizer, **opts).alias("r")
        path = ctx.folder / "rendered.arrow"
        # Per-row token counts go with the rows, so the totals below read two small columns
        # rather than decoding every token list again.
        labels = pl.col("labels")
        _sink_ipc(lf.select(ID, expr).unnest("r").with_columns(
            pl.col("input_ids").list.len().alias("n_tokens"),
            (labels.list.len() - labels.list.count_matches(-100)).alias("n_loss")),
            path, ctx.compression)
        r = pl.scan_ipc(path)
        err = pl.col("render_error")
        _sink(r.filter(err.is_not_null()).select(
            ID, pl.concat_str(pl.lit("render_error: "), err).alias(REASON)),
            ctx.folder / "dropped.parquet", ctx.compression)
        n = r.select(pl.len().alias("n"), err.is_null().sum().alias("ok"),
                     pl.col("n_tokens").sum().alias("tokens"),
                     pl.col("n_loss").sum().alias("loss_tokens")).collect().row(0, named=True)
        reasons = _counts(pl.scan_parquet(ctx.folder / "dropped.parquet"))
        return StepOutcome(int(n["n"]), int(n["ok"]), reasons, report={"render": {
            "tokens": int(n["tokens"] or 0), "loss_tokens": int(n["loss_tokens"] or 0)}})


class WriteShards(Step):
    """Pack the rendered samples (with the rebalance repeats) and write shards to
    ``<run>/shards`` (:func:`sftfast.write_shards`, same options: ``seq_len``, ``packing``,
    ``overlong``, ...). Samples the ``overlong`` policy drops are counted as
    ``overlong:dropped``; ``samples.parquet`` maps each shard sample id to its ``sft_id``."""

    name = "write_shards"
    uses_tokenizer = True

    def __init__(self, *, seq_len: int, **options: Any) -> None:
        bad = {"out", "tokenizer", "config_fingerprint", "overwrite"} & set(options)
        if bad:
            raise ConfigError(f"write_shards: options {sorted(bad)} are set by the pipeline")
        super().__init__(seq_len=seq_len, **options)
        self.fingerprint: str | None = None

    def progress_per_row(self) -> int:
        return 1

    def run(self, ctx: StepContext) -> StepOutcome:
        from sftfast.shards import write_shards

        if ctx.rendered is None:
            raise ConfigError("write_shards: needs a 'render' step before it")
        # The rendered rows are the rows alive at render (no step may drop rows after it, see
        # the order rules), so only its own errors are left out.
        rendered = ctx.rendered
        sel = None if ctx.selection is None else pl.read_parquet(ctx.selection).sort(ID)
        sel_ids = np.empty(0, np.uint64) if sel is None else sel[ID].to_numpy()
        ids: list[pl.Series] = []
        opts = dict(self.params)
        opts.setdefault("seed", ctx.seed)
        slice_rows = opts.get("batch_rows")  # (write_shards checks it)

        def batches() -> Iterator[pl.DataFrame]:
            # Slice by slice of rendered.arrow (bounded memory), in row-id order.
            for _, _, part in step_slices(rendered, slice_rows):
                b = (part.filter(pl.col("render_error").is_null())
                     .select(ID, "input_ids", "labels").collect())
                if b.height == 0:
                    continue
                if sel is not None:
                    lo_id, hi_id = int(b[ID].min()), int(b[ID].max())  # type: ignore[arg-type]
                    a = np.searchsorted(sel_ids, lo_id, side="left")
                    z = np.searchsorted(sel_ids, hi_id, side="right")
                    b = (b.join(sel.slice(int(a), int(z - a)), on=ID, how="inner",
                                maintain_order="left")
                         .with_columns(pl.int_ranges(0, pl.col(COPIES), dtype=pl.UInt32)
                                       .alias("rep"))
                         .explode("rep").drop("rep", COPIES))
                ids.append(b[ID])
                yield b

        m = write_shards(batches(), ctx.out / "shards", tokenizer=ctx.tokenizer,
                         config_fingerprint=self.fingerprint, overwrite=True, **opts)
        all_ids = pl.concat(ids) if ids else pl.Series(ID, [], pl.UInt64)
        all_ids.to_frame().with_row_index("sample_id").with_columns(
            pl.col("sample_id").cast(pl.UInt64)).write_parquet(
            ctx.folder / "samples.parquet", compression=CODECS[ctx.compression],
            row_group_size=BATCH_ROWS)
        pk = m.packing
        dropped = {"overlong:dropped": pk.dropped} if pk.dropped else {}
        report = {"seq_len": m.seq_len, "samples": m.samples, "rows": m.rows,
                  "tokens": m.tokens, "loss_tokens": m.loss_tokens,
                  "efficiency": pk.efficiency, "samples_dropped": pk.dropped,
                  "samples_truncated": pk.truncated, "tokens_lost": pk.tokens_lost,
                  "method": pk.method, "overlong": pk.overlong, "shards": len(m.shards),
                  "path": str(m.path), "row_fill": _row_fill(m)}
        return StepOutcome(pk.input_samples, m.samples, dropped, report={"packing": report})


STEPS: dict[str, type[Step]] = {s.name: s for s in (
    Read, LengthFilter, ExactDedup, NearDedup, Rebalance, Render, WriteShards)}
