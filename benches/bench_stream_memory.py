"""Peak RSS of a streaming filter over a large JSON Lines file.

Writes a JSONL file of about ``--gb`` GB (demo rows repeated with distinct ids), then runs, in a
fresh subprocess, ``scan_ndjson -> sft.token_count -> filter -> sink_parquet`` on Polars'
streaming engine and reports that subprocess's peak RSS, wall and CPU time.

    python benches/bench_stream_memory.py --gb 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, resource, polars as pl, sftfast
src, out, tok_path = sys.argv[1:4]
tok = sftfast.load_tokenizer(tok_path)
t0, c0 = time.perf_counter(), time.process_time()
(pl.scan_ndjson(src)
   .with_columns(pl.col("question").sft.token_count(tok).alias("nq"),
                 pl.col("answer").sft.token_count(tok).alias("na"))
   .filter((pl.col("nq") + pl.col("na")) <= 4096)
   .sink_parquet(out, engine="streaming"))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rows = pl.scan_parquet(out).select(pl.len()).collect().item()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rows_kept": rows, "peak_rss_mb": rss}))
""".replace("print(json", "import json; print(json")


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
    args = ap.parse_args()
    import sftfast

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out, tok = Path(tmp) / "big.jsonl", Path(tmp) / "kept.parquet", Path(tmp) / "tokenizer.json"
        tok.write_text(sftfast.demo_tokenizer_json(), encoding="utf-8")
        t0 = time.perf_counter()
        rows, size = write_input(src, args.gb)
        print(f"input: {rows:,} rows, {size / 1e9:.2f} GB (written in {time.perf_counter() - t0:.0f}s)")
        proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(tok)],
                              capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"rows kept {res['rows_kept']:,}; wall {res['wall_s']:.0f}s, CPU {res['cpu_s']:.0f}s, "
              f"{size / 1e6 / res['cpu_s']:.1f} MB/CPU-s; peak RSS {res['peak_rss_mb']:.0f} MB "
              f"(ru_maxrss of children: {child_rss:.0f} MB)")


if __name__ == "__main__":
    main()
