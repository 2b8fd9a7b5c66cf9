"""The ``sftfast`` command.

``sftfast demo``   generate a bilingual SFT set and a tokenizer in-process, filter, print stats.
``sftfast filter`` token-length filter files into Parquet, with a per-reason summary.
``sftfast rebalance`` rebalance categories (UniMax, temperature, caps, weights, counts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from sftfast import _native
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


@contextmanager
def progress(label: str, total: int | None, *, enabled: bool) -> Iterator[None]:
    """A one-line progress bar on stderr (rows, rows/s, ETA), only on a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    start_rows, start = _native.progress_rows(), time.monotonic()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.5):
            done = _native.progress_rows() - start_rows
            rate = done / max(time.monotonic() - start, 1e-9)
            line = f"\r{label}: {done:,} rows  {rate:,.0f} rows/s"
            if total:
                eta = max(total - done, 0) / rate if rate > 0 else 0.0
                line += f"  {100 * min(done / total, 1):5.1f}%  ETA {eta:,.0f}s"
            sys.stderr.write(line + "   ")
            sys.stderr.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        sys.stderr.write("\r" + " " * 80 + "\r")


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


def run_demo(args: argparse.Namespace) -> FilterStats:
    """The ``demo`` subcommand: generated data, generated tokenizer, length filter, stats."""
    import sftfast

    t0 = time.perf_counter()
    df = sftfast.demo_frame(args.rows, seed=args.seed)
    tok = sftfast.demo_tokenizer()
    t1 = time.perf_counter()
    res = sftfast.length_filter(
        df,
        fields={"question": (2, 256), "answer": (4, 1024)},
        max_total=1152,
        tokenizer=tok,
    )
    t2 = time.perf_counter()
    counts = df.lazy().select(
        sftfast.token_count("question", tok).alias("q"), sftfast.token_count("answer", tok).alias("a")
    ).collect()
    print(f"sftfast {sftfast.__version__} demo: {df.height:,} generated rows (English and Chinese),")
    print(f"a byte-level BPE trained in-process ({t1 - t0:.1f}s), fast path "
          f"{'on' if tok.fast_path else 'off'}, {sftfast.get_num_threads()} threads")
    print(f"tokens: question median {counts['q'].median():.0f}, answer median "
          f"{counts['a'].median():.0f}, answer max {counts['a'].max()}")
    print("filter: question 2..256, answer 4..1024, total <= 1152 tokens")
    print(res.stats.summary())
    print(f"filtered in {t2 - t1:.2f}s")
    _, plan = sftfast.rebalance(res.kept, category="category", method="unimax",
                                budget=res.stats.rows_kept // 2, max_epochs=4, seed=args.seed,
                                dry_run=True)
    print(f"\nrebalance (UniMax, half the kept rows, at most 4 epochs per category):\n{plan}")
    # Render as ChatML conversations and pack into shards of 1024-token rows.
    t3 = time.perf_counter()
    convs = res.kept.select(messages=pl.concat_list(
        pl.struct(role=pl.lit("user"), content=pl.col("question")),
        pl.struct(role=pl.lit("assistant"), content=pl.col("answer"))))
    rendered = sftfast.render(convs, tok, template="chatml")
    with tempfile.TemporaryDirectory(prefix="sftfast-demo-") as tmp:
        m = sftfast.write_shards(rendered.frame, tmp, seq_len=1024, tokenizer=tok)
    print(f"\nrender (chatml, assistant-only labels) + pack into 1024-token rows: "
          f"{m.samples:,} samples -> {m.rows:,} rows, {m.tokens:,} tokens "
          f"({m.loss_tokens:,} learned), efficiency {m.packing.efficiency:.2%}, "
          f"{len(m.shards)} shard(s), {time.perf_counter() - t3:.2f}s")
    if args.out:
        res.kept.write_parquet(args.out)
        print(f"wrote {args.out}")
    return res.stats


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
    d.add_argument("--out", help="write the kept rows to this Parquet file")
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
