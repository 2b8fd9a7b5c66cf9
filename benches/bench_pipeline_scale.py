"""Peak memory of the whole pipeline on many rows (issue #7: 20M rows under 4 GB RSS).

    python3 benches/bench_pipeline_scale.py --rows 20000000 --data-dir /tmp/bench_scale

Input: ``--rows`` short bilingual conversations (``sftfast.demo.demo_conversations`` per million,
each with its own seed, so ~2% exact and ~3% near copies; questions cut to 100 characters,
answers to 160) in files of one million rows: the first ``--jsonl-files`` as JSON Lines, the rest
as Parquet (zstd), to keep the input on disk small. The pipeline is the full one (read → length
filter → exact dedup → near dedup → UniMax rebalance to ``--budget`` rows → ChatML render →
packing into 2,048-token shards) with the Qwen2-style tokenizer. Peak RSS is read two ways: per
step (``VmHWM``, reset at each step start) and by a thread sampling ``VmRSS`` every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2-bpe151k-rebuilt"
CHUNK = 1_000_000


def make_chunk(args: tuple[Path, int, bool]) -> Path:
    import polars as pl

    from sftfast.demo import demo_conversations

    folder, i, jsonl = args
    path = folder / f"part-{i:03d}.{'jsonl' if jsonl else 'parquet'}"
    if path.exists():
        return path
    df = demo_conversations(int(CHUNK / 1.05), seed=1000 + i).with_columns(
        pl.col("messages").list.eval(pl.struct(
            role=pl.element().struct.field("role"),
            content=pl.when(pl.element().struct.field("role") == "user")
            .then(pl.element().struct.field("content").str.slice(0, 100))
            .otherwise(pl.element().struct.field("content").str.slice(0, 160)))))
    tmp = path.with_suffix(".tmp")
    if jsonl:
        df.write_ndjson(tmp)
    else:
        df.write_parquet(tmp, compression="zstd")
    os.replace(tmp, path)
    return path


class Sampler:
    """Largest VmRSS seen by a thread polling /proc/self/status."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--jsonl-files", type=int, default=4)
    ap.add_argument("--budget", type=int, help="rebalance budget (default: rows / 4)")
    ap.add_argument("--data-dir", default="/tmp/bench_scale")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run folder of an interrupted run instead of starting over")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not TOKENIZER.is_dir():
        print(f"skipped: {TOKENIZER} is absent")
        return 0
    import sftfast

    data = Path(args.data_dir) / "input"
    data.mkdir(parents=True, exist_ok=True)
    n_files = max(1, args.rows // CHUNK)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as ex:
        files = list(ex.map(make_chunk, [(data, i, i < args.jsonl_files)
                                         for i in range(n_files)]))
    size = sum(f.stat().st_size for f in files)
    print(f"input: {n_files} files, {size / 1e9:.2f} GB on disk ({time.perf_counter() - t0:.0f}s "
          f"to generate or find)", flush=True)
    run = Path(args.data_dir) / "run"
    if not args.resume:
        shutil.rmtree(run, ignore_errors=True)
    cfg = {
        "tokenizer": str(TOKENIZER), "seed": 0,
        "steps": [
            {"read": {"paths": [str(f) for f in files]}},
            {"length_filter": {"prompt": [1, 1024], "response": [1, 1024], "max_total": 2048}},
            {"exact_dedup": {}},
            {"near_dedup": {"threshold": 0.8}},
            {"rebalance": {"category_column": "category", "method": "unimax",
                           "budget": args.budget or args.rows // 4, "max_epochs": 4}},
            {"render": {"template": "chatml"}},
            {"write_shards": {"seq_len": 2048}},
        ],
    }
    sampler = Sampler()
    t1, c1 = time.perf_counter(), time.process_time()
    result = sftfast.Pipeline.from_config(cfg).run(run, quiet=False, report=True)
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    peak = sampler.stop()
    print(result.summary())
    step_peak = max(s.peak_rss_bytes for s in result.steps)
    resumed = [s.name for s in result.steps if s.resumed]
    if resumed:
        # Steps taken from an earlier, interrupted run: their own stats.json figures count.
        print(f"resumed (figures from the interrupted run): {', '.join(resumed)}; sum of step "
              f"CPU-s {sum(s.cpu_seconds for s in result.steps):,.0f}, sum of step wall-s "
              f"{sum(s.seconds for s in result.steps):,.0f}")
    print(f"\n{result.steps[0].rows_in:,} rows end to end: {wall:,.0f} s wall, {cpu:,.0f} CPU-s; "
          f"peak RSS {peak / 2**30:.2f} GiB (sampled), {step_peak / 2**30:.2f} GiB (max step "
          f"VmHWM); sftfast {sftfast.__version__}, {sftfast.get_num_threads()} threads")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": result.steps[0].rows_in, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak,
            "steps": [s.__dict__ for s in result.steps]}, indent=1))
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
