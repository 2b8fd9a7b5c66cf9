"""Peak RSS of a streaming filter over a large JSON Lines file.

Writes a JSONL file of about ``--gb`` GB (demo rows repeated with distinct ids), then runs, in a
fresh subprocess per reader, ``scan -> sft.token_count -> filter -> sink_parquet`` on Polars'
streaming engine, where scan is ``pl.scan_ndjson`` (memory-maps the file) or
``sftfast.scan_jsonl`` (bounded blocks). Reports peak RSS, split into anonymous and
file-backed pages (sampled from /proc/self/status), wall and CPU time.

    python benches/bench_stream_memory.py --gb 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, threading, time, resource, polars as pl, sftfast
src, out, tok_path, reader = sys.argv[1:5]
tok = sftfast.load_tokenizer(tok_path)
peak = {"RssAnon": 0, "RssFile": 0}
done = threading.Event()

def sample():
    while not done.wait(0.2):
        with open("/proc/self/status") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))

threading.Thread(target=sample, daemon=True).start()
scan = pl.scan_ndjson(src) if reader == "scan_ndjson" else sftfast.scan_jsonl(src)
t0, c0 = time.perf_counter(), time.process_time()
(scan.with_columns(pl.col("question").sft.token_count(tok).alias("nq"),
                   pl.col("answer").sft.token_count(tok).alias("na"))
     .filter((pl.col("nq") + pl.col("na")) <= 4096)
     .sink_parquet(out, engine="streaming"))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
done.set()
rows = pl.scan_parquet(out).select(pl.len()).collect().item()
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rows_kept": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak["RssAnon"] / 1024, "peak_file_mb": peak["RssFile"] / 1024}))
"""


def write_input(path: Path, gb: float) -> tuple[int, int]:
    import polars as pl

    import sftfast

    block = sftfast.demo_frame(200_000, seed=1).drop("id")
    rows = written = 0
    with path.open("wb") as fh:
        i = 0
        while written < gb * 1e9:
            part = block.with_columns(pl.int_range(i * block.height, (i + 1) * block.height).alias("id"))
            part.write_ndjson(fh)
            written = fh.tell()
            rows += part.height
            i += 1
    return rows, written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=5.0)
    ap.add_argument("--dir", default=None, help="where to write the temporary files")
    ap.add_argument("--readers", nargs="+", default=["scan_ndjson", "sftfast"],
                    choices=["scan_ndjson", "sftfast"])
    args = ap.parse_args()
    import sftfast

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out, tok = Path(tmp) / "big.jsonl", Path(tmp) / "kept.parquet", Path(tmp) / "tokenizer.json"
        tok.write_text(sftfast.demo_tokenizer_json(), encoding="utf-8")
        t0 = time.perf_counter()
        rows, size = write_input(src, args.gb)
        print(f"input: {rows:,} rows, {size / 1e9:.2f} GB (written in {time.perf_counter() - t0:.0f}s)")
        print("| reader | rows kept | wall | CPU | MB/CPU-s | peak RSS | peak anon | peak file-backed |")
        print("|---|---|---|---|---|---|---|---|")
        for reader in args.readers:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(tok), reader],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {reader} | {r['rows_kept']:,} | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | "
                  f"{size / 1e6 / r['cpu_s']:.1f} | {r['peak_rss_mb']:,.0f} MB | "
                  f"{r['peak_anon_mb']:,.0f} MB | {r['peak_file_mb']:,.0f} MB |", flush=True)

if __name__ == "__main__":
    main()
