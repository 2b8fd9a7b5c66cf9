#!/usr/bin/env python3
"""Near-dedup at scale: peak RSS and time of `sftfast.near_dedup` on millions of rows.

Writes synthetic SFT-like texts (24 words from a 50k-word vocabulary, ~190 bytes; 10% are
copies of an earlier row with one word replaced) as Parquet parts, then runs
`sftfast.near_dedup(pl.scan_parquet(parts), "text")` in a fresh process and writes the marked
rows back with `sink_parquet`. CPU-s and peak RSS come from `wait4` on that process.

    python3 benches/bench_dedup_scale.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = 24


def make_input(rows: int, out_dir: Path, seed: int = 0) -> list[str]:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    vocab = pl.Series([f"w{i}" for i in range(50_000)])
    files = []
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        idx = rng.integers(0, len(vocab), size=(n, WORDS))
        dup = rng.random(n) < 0.1
        src = np.maximum(np.arange(n) - rng.integers(1, 1000, size=n), 0)
        idx[dup] = idx[src[dup]]
        idx[dup, rng.integers(0, WORDS, size=int(dup.sum()))] = rng.integers(0, len(vocab),
                                                                              size=int(dup.sum()))
        cols = [vocab.gather(idx[:, j]) for j in range(WORDS)]
        text = pl.DataFrame(cols).select(pl.concat_str(pl.all(), separator=" ").alias("text"))
        df = text.with_columns(id=pl.int_range(start, start + n, dtype=pl.Int64))
        path = out_dir / f"part-{start // chunk:05d}.parquet"
        df.write_parquet(path)
        files.append(str(path))
    return files


def worker(spec_file: str) -> None:
    import polars as pl

    import sftfast

    spec = json.loads(Path(spec_file).read_text())
    t0 = time.perf_counter()
    res = sftfast.near_dedup(pl.scan_parquet(spec["files"]), "text", threshold=0.8)
    t1 = time.perf_counter()
    res.frame.sink_parquet(spec["out"])
    print(json.dumps({"near_dedup_s": t1 - t0, "sink_s": time.perf_counter() - t1,
                      "duplicates": res.stats.duplicates, "clusters": res.stats.clusters}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    with tempfile.TemporaryDirectory(prefix="bench_dedup_scale-", dir=args.dir) as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        files = make_input(args.rows, tmp)
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        print(f"input: {args.rows:,} rows, {mb:.0f} MB Parquet, made in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"files": files, "out": str(tmp / "out.parquet")}))
        env = os.environ | {"SFTFAST_NUM_THREADS": str(args.threads),
                            "POLARS_MAX_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        with open(tmp / "w.out", "w") as fo, open(tmp / "w.err", "w") as fe:
            proc = subprocess.Popen([sys.executable, __file__, "--worker", str(spec)],
                                    stdout=fo, stderr=fe, env=env)
            _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            sys.exit((tmp / "w.err").read_text()[-3000:])
        r = json.loads((tmp / "w.out").read_text().strip().splitlines()[-1])
        print(f"Command: `python3 {shlex.join(sys.argv)}`\n")
        print("| rows | threads | wall s | CPU-s | peak RSS MB | near_dedup s | sink s | clusters "
              "| duplicates |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.rows:,} | {args.threads} | {wall:.1f} | {ru.ru_utime + ru.ru_stime:.1f} "
              f"| {ru.ru_maxrss / 1024:.0f} | {r['near_dedup_s']:.1f} | {r['sink_s']:.1f} "
              f"| {r['clusters']:,} | {r['duplicates']:,} |")


if __name__ == "__main__":
    main()
