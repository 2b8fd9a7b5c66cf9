"""The pipeline's file work, piece by piece (issue #7): JSON Lines in, token lists between steps.

1. ``scan``: the native JSON Lines scan (validation of every line and the schema, one pass).
2. ``parse``: each 16 MB block into a DataFrame with that schema, Polars' NDJSON reader
   (``pl.read_ndjson(block, schema=...)``) against sftfast's (``rust/src/jsoncols.rs``,
   straight into Arrow columns); both frames are checked equal.
3. ``token lists``: the rendered samples read back slice by slice (65,536 rows, as the shard
   writer does) from uncompressed Parquet against Arrow IPC, both written by Polars' streaming
   sinks from the same frame of random token lists (lengths log-normal around 200).

Alternating in one process, ``--repeats`` times; medians of CPU-seconds (user + system) of this
process. Input: the pipeline benchmark's synthetic JSON Lines (``_pipeline_common.py``).

    python3 benches/bench_step_io.py --rows 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchutil import versions
from _pipeline_common import ensure_data
from sftfast import _native
from sftfast._formats import _blocks, _polars_type


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def token_frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    lens = np.clip(rng.lognormal(np.log(200), 0.8, rows).astype(np.int64), 1, 4096)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    ids = rng.integers(0, 151_000, int(offsets[-1]), dtype=np.uint32)
    labels = np.where(rng.random(len(ids)) < 0.2, -100, ids.astype(np.int32)).astype(np.int32)
    starts = offsets[:-1]
    return pl.DataFrame({
        "sft_id": np.arange(rows, dtype=np.uint64),
        "input_ids": [ids[a:b] for a, b in zip(starts, offsets[1:])],
        "labels": [labels[a:b] for a, b in zip(starts, offsets[1:])],
    }, schema={"sft_id": pl.UInt64, "input_ids": pl.List(pl.UInt32),
               "labels": pl.List(pl.Int32)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/bench_pipeline-data"))
    args = ap.parse_args()
    path, _ = ensure_data(args.data_dir, args.rows, args.seed)
    times: dict[str, list[float]] = {}

    def timed(name: str, f):  # type: ignore[no-untyped-def]
        t = cpu()
        out = f()
        times.setdefault(name, []).append(cpu() - t)
        return out

    jtype = _native.scan_jsonl(str(path))[4]
    if jtype is None:
        sys.exit("the benchmark data has no single schema (not expected)")
    schema = pl.Schema(_polars_type(jtype).to_schema())
    blocks = [b for _, b in _blocks(path)]
    with tempfile.TemporaryDirectory() as d:
        tok = token_frame(args.rows // 2, args.seed)
        pq, ipc = Path(d) / "t.parquet", Path(d) / "t.arrow"
        tok.lazy().sink_parquet(pq, compression="uncompressed", row_group_size=16_384)
        tok.lazy().sink_ipc(ipc, compression=None)
        n = tok.height

        def slices(scan):  # type: ignore[no-untyped-def]
            got = 0
            for a in range(0, n, 65_536):
                got += scan().slice(a, 65_536).select("input_ids", "labels").collect().height
            return got

        for _ in range(args.repeats):
            timed("scan (native, whole file)", lambda: _native.scan_jsonl(str(path)))
            want = timed("parse: Polars read_ndjson(schema)",
                         lambda: pl.concat([pl.read_ndjson(b, schema=schema) for b in blocks]))
            got = timed("parse: sftfast jsonl_frames", lambda: pl.concat(
                [f for b in blocks for f in _native.jsonl_frames(b, jtype, None, 10_000)]))
            assert_frame_equal(got, want)
            assert timed("token lists: Parquet slices", lambda: slices(
                lambda: pl.scan_parquet(pq))) == n
            assert timed("token lists: Arrow IPC slices", lambda: slices(
                lambda: pl.scan_ipc(ipc))) == n
    print(f"`python3 benches/bench_step_io.py --rows {args.rows} --repeats {args.repeats}` "
          f"({args.rows:,} rows, {path.stat().st_size / 2**20:,.0f} MiB of JSON Lines; "
          f"{args.rows // 2:,} token lists; {versions(['polars', 'numpy'])})\n")
    print("| work | median CPU-s | runs |\n|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.3f} | "
              f"{', '.join(f'{x:.2f}' for x in v)} |")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nparse: sftfast {med['parse: Polars read_ndjson(schema)'] / med['parse: sftfast jsonl_frames']:.1f}x "
          f"Polars; token lists: IPC {med['token lists: Parquet slices'] / med['token lists: Arrow IPC slices']:.1f}x Parquet")


if __name__ == "__main__":
    main()
