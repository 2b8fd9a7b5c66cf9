#!/usr/bin/env python3
"""Category rebalancing: sftfast.rebalance vs HF `datasets.interleave_datasets`.

Same input (a Parquet file of synthetic SFT rows: id, category with a skewed mix, tokens,
text), same probabilities (p_i ∝ sqrt(n_i)), same output (the selected rows written as
Parquet). HF runs first with `stopping_strategy="first_exhausted"`; its output length becomes
sftfast's budget (`method="weights"` with the same p, `max_epochs=1`: like `first_exhausted`,
no row is repeated), so both write the same number of rows.
Each tool runs in its own subprocess (whole process: interpreter start, imports, all passes,
the Parquet write); CPU-seconds (user+sys, all threads) and peak RSS come from `wait4`. sftfast
runs with 1 and 2 Polars threads; HF is single-threaded. HF's steps are its documented ones: `Dataset.from_parquet`, one batched Arrow `filter`
per category, `interleave_datasets`, `to_parquet`.

    python3 benches/bench_rebalance.py --rows 10000000 --repeats 3
    python3 benches/bench_rebalance.py --rows 100000000 --tools sftfast   # memory at scale
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CATEGORIES = ["classification", "translation", "code", "chain_of_thought", "dialogue",
              "extraction", "summarization", "closed qa"]


def make_input(rows: int, out_dir: Path, seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """Write `rows` synthetic rows as Parquet parts (bounded memory); returns files and sizes."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    shares = np.array([1 / (i + 1) ** 1.3 for i in range(len(CATEGORIES))])  # Zipf-like skew
    shares /= shares.sum()
    files, sizes = [], dict.fromkeys(CATEGORIES, 0)
    chunk = 5_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cat = rng.choice(len(CATEGORIES), size=n, p=shares)
        tokens = np.clip(rng.lognormal(5.8, 0.9, size=n), 8, 8192).astype(np.uint32)
        df = pl.DataFrame({
            "id": np.arange(start, start + n, dtype=np.int64),
            "category": pl.Series(np.array(CATEGORIES)[cat]),
            "sft_tokens": tokens,
            "text": pl.Series(np.array(["q" * 8, "w" * 16, "e" * 24])[cat % 3]),
        })
        path = out_dir / f"part-{start // chunk:05d}.parquet"
        df.write_parquet(path)
        files.append(str(path))
        for c, k in df.group_by("category").len().iter_rows():
            sizes[c] += k
    return files, sizes


def probabilities(sizes: dict[str, int]) -> dict[str, float]:
    w = {c: n ** 0.5 for c, n in sizes.items()}
    s = sum(w.values())
    return {c: v / s for c, v in w.items()}


# ----------------------------------------------------------------------------- workers
def run_hf(files: list[str], probs: dict[str, float], out: str, seed: int) -> int:
    import pyarrow.compute as pc
    from datasets import Dataset, disable_progress_bars, interleave_datasets

    disable_progress_bars()
    ds = Dataset.from_parquet(files, cache_dir=str(Path(out).parent / "hf-cache"))
    parts = []
    for c in probs:
        parts.append(ds.with_format("arrow").filter(
            lambda t, c=c: pc.equal(t["category"], c), batched=True, batch_size=100_000
        ).with_format(None))
    mixed = interleave_datasets(parts, probabilities=list(probs.values()), seed=seed,
                                stopping_strategy="first_exhausted")
    mixed.to_parquet(out)
    return len(mixed)


def run_sftfast(files: list[str], probs: dict[str, float], out: str, seed: int,
                budget: int) -> int:
    import polars as pl

    import sftfast

    lf = pl.scan_parquet(files)
    sel, plan = sftfast.rebalance(lf, category="category", method="weights", weights=probs,
                                  budget=budget, max_epochs=1, seed=seed)
    sel.sink_parquet(out, engine="streaming")
    return plan.rows_out


def worker(tool: str, spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    t0 = time.perf_counter()
    if tool == "hf":
        n = run_hf(spec["files"], spec["probs"], spec["out"], spec["seed"])
    else:
        n = run_sftfast(spec["files"], spec["probs"], spec["out"], spec["seed"], spec["budget"])
    print(json.dumps({"rows_out": n, "wall": time.perf_counter() - t0}))


def measure_rusage(tool: str, spec: dict, tmp: Path, threads: int = 1) -> dict:
    """Run a worker; CPU and peak RSS of that child only, from wait4."""
    spec_file = tmp / f"spec-{tool}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--worker", tool, str(spec_file)]
    out_path, err_path = tmp / f"{tool}.out", tmp / f"{tool}.err"
    env = os.environ | {"POLARS_MAX_THREADS": str(threads), "SFTFAST_NUM_THREADS": str(threads)}
    with open(out_path, "w") as fo, open(err_path, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"worker failed: {shlex.join(cmd)}\n{err_path.read_text()[-3000:]}")
    res = json.loads(out_path.read_text().strip().splitlines()[-1])
    res.update(cpu=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024)
    for p in Path(spec["out"]).parent.glob("hf-cache*"):
        subprocess.run(["rm", "-rf", str(p)], check=False)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", nargs="+", default=["hf", "sftfast"], choices=["hf", "sftfast"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="sftfast thread counts (HF is single-threaded)")
    ap.add_argument("--budget", type=int, help="sftfast budget when HF does not run "
                                               "(default: 60%% of the rows)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: /tmp)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    with tempfile.TemporaryDirectory(prefix="bench_rebalance-", dir=args.dir) as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        files, sizes = make_input(args.rows, tmp)
        print(f"input: {args.rows:,} rows in {len(files)} Parquet parts "
              f"({sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB), "
              f"made in {time.perf_counter() - t0:.0f} s; sizes {sizes}", file=sys.stderr)
        probs = probabilities(sizes)
        spec = {"files": files, "probs": probs, "seed": 0,
                "budget": args.budget or int(args.rows * 0.6)}
        configs = [("hf", 1)] if "hf" in args.tools else []
        configs += [("sftfast", t) for t in args.threads] if "sftfast" in args.tools else []
        results: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
        for rep in range(args.repeats):
            for tool, threads in configs:
                spec["out"] = str(tmp / f"out-{tool}.parquet")
                r = measure_rusage(tool, spec, tmp, threads)
                if tool == "hf":
                    spec["budget"] = r["rows_out"]  # same output size for sftfast
                results[(tool, threads)].append(r)
                print(f"[{time.strftime('%H:%M:%S')}] run {rep} {tool} {threads}t: {r}",
                      file=sys.stderr, flush=True)
        print(f"\nCommand: `python3 {shlex.join(sys.argv)}`\n")
        print(f"{args.rows:,} rows, {len(CATEGORIES)} categories, probabilities ∝ sqrt(n); "
              f"medians of {args.repeats} run(s); load average {os.getloadavg()[0]:.2f}\n")
        print("| tool | threads | rows out | CPU-s | wall s | peak RSS MB | input rows/CPU-s "
              "| × HF per CPU-s |")
        print("|---|---|---|---|---|---|---|---|")
        med = {c: statistics.median(r["cpu"] for r in rs) for c, rs in results.items()}
        for (tool, threads), rs in results.items():
            cpu = med[(tool, threads)]
            wall = statistics.median(r["wall"] for r in rs)
            rss = max(r["rss_mb"] for r in rs)
            ratio = f"{med[('hf', 1)] / cpu:.1f}" if tool == "sftfast" and ("hf", 1) in med else ""
            print(f"| {tool} | {threads} | {rs[-1]['rows_out']:,} | {cpu:.2f} | {wall:.2f} "
                  f"| {rss:.0f} | {args.rows / cpu:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
