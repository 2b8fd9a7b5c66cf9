"""The ``sftfast`` command.

``sftfast demo``    the whole pipeline on generated data and a generated tokenizer (offline).
``sftfast prepare`` run a pipeline config (YAML/TOML/JSON) from raw files to shards.
``sftfast filter`` token-length filter files into Parquet, with a per-reason summary.
``sftfast rebalance`` rebalance categories (UniMax, temperature, caps, weights, counts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
from sftfast._progress import progress
from sftfast.exceptions import ConfigError, SftfastError
from sftfast.filter import REASON, FilterStats, normalize_fields
from sftfast.io import ROW, SOURCE, ScanResult, scan_inputs
from sftfast.tokenizer import Tokenizer

__all__ = ["main"]

DEFAULT_FIELDS = (
    ("instruction", "input", "output"),
    ("instruction", "input", "response"),
    ("question", "answer"),
    ("prompt", "response"),
    ("prompt", "completion"),
    ("input", "target"),
    ("instruction", "output"),
)


def _parse_field(spec: str) -> tuple[str, tuple[int | None, int | None]]:
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise ConfigError(f"--field {spec!r}: expected NAME:MIN:MAX (MIN or MAX may be empty)")
    name, lo, hi = parts
    try:
        return name, (int(lo) if lo else None, int(hi) if hi else None)
    except ValueError:
        raise ConfigError(f"--field {spec!r}: MIN and MAX must be integers") from None


def _default_fields(schema: pl.Schema) -> dict[str, tuple[int | None, int | None]]:
    for names in DEFAULT_FIELDS:
        if all(n in schema and schema[n] == pl.String for n in names):
            return {n: (None, None) for n in names}
    strings = [n for n, t in schema.items() if t == pl.String and n != SOURCE]
    if not strings:
        raise ConfigError("no string columns to measure; name them with --field NAME:MIN:MAX")
    return {n: (None, None) for n in strings}


def _count_rows(paths: Sequence[str]) -> int | None:
    try:
        return sum(
            pl.scan_parquet(p).select(pl.len()).collect().item()
            if p.endswith(".parquet")
            else _native.count_lines(p)
            for p in paths
        )
    except (OSError, SftfastError, pl.exceptions.PolarsError):
        return None


def run_filter(args: argparse.Namespace) -> FilterStats:
    """The ``filter`` subcommand; returns the stats it printed."""
    import sftfast

    if args.threads:
        sftfast.set_num_threads(args.threads)
    tok = sftfast.load_tokenizer(args.tokenizer)
    scanned = scan_inputs(args.inputs, strict=args.strict)
    try:
        return _filter_scanned(args, tok, scanned)
    finally:
        if scanned.tempdir is not None:
            scanned.tempdir.cleanup()


def _filter_scanned(args: argparse.Namespace, tok: Tokenizer, scanned: ScanResult) -> FilterStats:
    import sftfast

    lf = scanned.frame
    schema = lf.collect_schema()
    fields = dict(map(_parse_field, args.field)) if args.field else _default_fields(schema)
    fields = normalize_fields(fields, schema)
    max_total = None if str(args.max_total).lower() == "none" else int(args.max_total)
    reason = sftfast.length_reason(
        fields,
        tok,
        max_total=max_total,
        add_special_tokens=args.add_special_tokens,
        drop_empty=not args.keep_empty,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sftfast-", dir=out.parent) as tmp:
        marked = Path(tmp) / "marked.parquet"
        total = _count_rows(args.inputs)
        with progress("filter", total, enabled=not args.quiet):
            lf.with_columns(reason).sink_parquet(marked, engine="streaming")
        m = pl.scan_parquet(marked)
        tmp_out = Path(tmp) / "kept.parquet"
        m.filter(pl.col(REASON).is_null()).drop(REASON, SOURCE, ROW).sink_parquet(tmp_out)
        os.replace(tmp_out, out)  # atomic: a crash never leaves a half-written output
        counts = m.group_by(REASON).len().sort(REASON).collect()
        if args.rejects:
            rejected = m.filter(pl.col(REASON).is_not_null())
            if scanned.bad_rows:
                bad = pl.LazyFrame(
                    {
                        SOURCE: [b.source for b in scanned.bad_rows],
                        ROW: [b.line - 1 for b in scanned.bad_rows],
                        REASON: [b.reason for b in scanned.bad_rows],
                    },
                    schema_overrides={ROW: pl.UInt32},
                )
                rejected = pl.concat([rejected, bad], how="diagonal_relaxed")
            rejected.sink_parquet(args.rejects)
    dropped = {
        r: n for r, n in zip(counts[REASON].to_list(), counts["len"].to_list(), strict=True) if r
    }
    for b in scanned.bad_rows:
        key = b.reason.split(":", 1)[0]
        dropped[key] = dropped.get(key, 0) + 1
    kept = int(counts.filter(pl.col(REASON).is_null())["len"].sum())
    stats = FilterStats(rows_in=kept + sum(dropped.values()), rows_kept=kept, dropped=dropped)
    if not args.quiet:
        print(f"tokenizer: {args.tokenizer} (fast path: {'on' if tok.fast_path else 'off'})")
        print("fields: " + ", ".join(f"{k} {v}" for k, v in fields.items()), f"max_total {max_total}")
        print(stats.summary())
        print(f"wrote {out}" + (f" and rejects to {args.rejects}" if args.rejects else ""))
    return stats


def run_demo(args: argparse.Namespace) -> Any:
    """The ``demo`` subcommand: the whole pipeline on generated data with a generated
    tokenizer, offline, in ``--out`` (default ``./sftfast-demo``)."""
    import sftfast
    from sftfast.demo import demo_config

    t0 = time.perf_counter()
    cfg = demo_config(args.out, args.rows, seed=args.seed)
    if not args.quiet:
        print(f"sftfast {sftfast.__version__} demo: {args.rows:,} generated conversations "
              f"(English and Chinese, with duplicates) and a byte-level BPE trained in-process, "
              f"in {args.out} ({time.perf_counter() - t0:.1f}s)")
    pipe = sftfast.Pipeline.from_config(cfg)
    if not args.quiet:
        print(pipe.plan(args.out))
    result = pipe.run(args.out, quiet=args.quiet, force=args.force)
    if not args.quiet:
        _print_result(result)
        print(f"\nthe demo took {time.perf_counter() - t0:.1f}s; run it again to see it resume")
    return result


def _print_result(result: Any) -> None:
    import sftfast

    print("\n" + result.summary())
    if result.shards is not None:
        m = sftfast.read_manifest(result.shards)
        print(f"\nshards: {m.samples:,} samples in {m.rows:,} rows of {m.seq_len:,} tokens "
              f"({m.tokens:,} tokens, {m.loss_tokens:,} learned), packing efficiency "
              f"{m.packing.efficiency:.2%}, in {result.shards}")
    for what, path in (("rejected rows", result.rejects), ("report", result.report)):
        if path is not None:
            print(f"{what}: {path}")


def run_prepare(args: argparse.Namespace) -> Any:
    """The ``prepare`` subcommand: run (or resume, or plan) a pipeline from a config file."""
    import sftfast

    if args.threads:
        sftfast.set_num_threads(args.threads)
    pipe = sftfast.Pipeline.from_config(args.config)
    out = args.out or pipe.defaults.get("output")
    if out is None:
        raise ConfigError("no output folder: pass --out or set 'output' in the config")
    if args.dry_run:
        print(pipe.plan(out))
        return None
    result = pipe.run(out, force=args.force, quiet=args.quiet,
                      rejects=True if args.rejects else None,
                      report=False if args.no_report else None)
    if not args.quiet:
        _print_result(result)
    return result


def _parse_pairs(specs: Sequence[str], what: str, cast: type) -> dict[str, Any] | None:
    if not specs:
        return None
    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = cast(value)
        except ValueError:
            raise ConfigError(f"--{what} {spec!r}: expected CATEGORY=NUMBER") from None
    return out


def run_rebalance(args: argparse.Namespace) -> Any:
    """The ``rebalance`` subcommand; returns the plan it printed."""
    import sftfast

    scanned = scan_inputs(args.inputs, strict=args.strict)
    try:
        sel, plan = sftfast.rebalance(
            scanned.frame, category=args.category, method=args.method, budget=args.budget,
            unit=args.unit, max_epochs=args.max_epochs, temperature=args.temperature,
            cap=args.cap, floor=args.floor, weights=_parse_pairs(args.weight, "weight", float),
            counts=_parse_pairs(args.count, "count", int), length_column=args.length_column,
            key=args.key or None, null_category=args.null_category, seed=args.seed,
            dry_run=args.dry_run or not args.out,
        )
        if sel is not None:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="sftfast-", dir=out.parent) as tmp:
                tmp_out = Path(tmp) / "selected.parquet"
                sel.drop(SOURCE, ROW, strict=False).sink_parquet(tmp_out, engine="streaming")
                os.replace(tmp_out, out)
    finally:
        if scanned.tempdir is not None:
            scanned.tempdir.cleanup()
    if not args.quiet:
        print(plan)
        for b in scanned.bad_rows[:5]:
            print(f"unreadable: {b.source} line {b.line}: {b.reason}")
        if scanned.bad_rows:
            print(f"{len(scanned.bad_rows):,} unreadable lines set aside")
        if sel is not None:
            print(f"wrote {args.out}")
    return plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sftfast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run on generated data and a generated tokenizer (offline)")
    d.add_argument("--rows", type=int, default=20_000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="sftfast-demo", help="the run folder (default: %(default)s)")
    d.add_argument("--force", action="store_true", help="redo steps whose config changed")
    d.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    pr = sub.add_parser("prepare", help="run a pipeline config (YAML/TOML/JSON): raw files to "
                        "shards, resumably, with a report")
    pr.add_argument("config", help="the pipeline config file")
    pr.add_argument("--out", help="the run folder (default: 'output' in the config)")
    pr.add_argument("--dry-run", action="store_true",
                    help="print the plan (steps, inputs, estimated rows, what would resume)")
    pr.add_argument("--force", action="store_true",
                    help="redo the steps whose config or inputs changed, and all after them")
    pr.add_argument("--rejects", action="store_true",
                    help="write every dropped row with its step and reason to rejects.parquet")
    pr.add_argument("--no-report", action="store_true", help="skip report.html")
    pr.add_argument("--threads", type=int, default=0)
    pr.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    f = sub.add_parser("filter", help="token-length filter files into Parquet")
    f.add_argument("inputs", nargs="+", help="JSONL / JSON / Parquet / CSV files")
    f.add_argument("--tokenizer", required=True, help="tokenizer.json or a model directory")
    f.add_argument("--field", action="append", default=[], metavar="NAME:MIN:MAX",
                   help="token bounds for a column (repeatable; MIN or MAX may be empty)")
    f.add_argument("--max-total", default="4096", help="bound on all fields together, or 'none'")
    f.add_argument("--out", required=True, help="output Parquet file (kept rows)")
    f.add_argument("--rejects", help="write dropped rows with sft_drop_reason to this Parquet")
    f.add_argument("--add-special-tokens", action="store_true")
    f.add_argument("--keep-empty", action="store_true", help="keep empty/whitespace fields")
    f.add_argument("--strict", action="store_true", help="stop on the first unreadable line")
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    r = sub.add_parser("rebalance", help="rebalance categories into Parquet (or --dry-run)")
    r.add_argument("inputs", nargs="+", help="JSONL / JSON / Parquet / CSV files")
    r.add_argument("--category", required=True, help="the category column")
    r.add_argument("--method", default="unimax",
                   choices=["proportional", "cap", "temperature", "unimax", "weights", "counts"])
    r.add_argument("--budget", type=int, help="total units wanted (default: the input total)")
    r.add_argument("--unit", default="rows", choices=["rows", "tokens", "label_tokens"])
    r.add_argument("--length-column", help="per-row units for --unit tokens/label_tokens")
    r.add_argument("--max-epochs", type=float, default=4.0)
    r.add_argument("--temperature", type=float)
    r.add_argument("--cap", type=int)
    r.add_argument("--floor", type=int)
    r.add_argument("--weight", action="append", default=[], metavar="CATEGORY=W")
    r.add_argument("--count", action="append", default=[], metavar="CATEGORY=N")
    r.add_argument("--key", action="append", default=[], help="key column(s) for selection")
    r.add_argument("--null-category", help="category for rows with a null label")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="output Parquet file (without it: plan only)")
    r.add_argument("--dry-run", action="store_true", help="print the plan only")
    r.add_argument("--strict", action="store_true", help="stop on the first unreadable line")
    r.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args)
        elif args.command == "prepare":
            run_prepare(args)
        elif args.command == "filter":
            run_filter(args)
        elif args.command == "rebalance":
            run_rebalance(args)
    except SftfastError as exc:
        print(f"sftfast: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
