"""All of ../shared/data through the full pipeline with the Qwen2-style tokenizer: time per step.

    python3 benches/bench_shared_pipeline.py --repeats 3

Every SFT file in ../shared/data (not the tokenizers) is read with detected schemas, filtered
to 1..4096 tokens per side (≤ 4096 in all), exact- and near-deduplicated, rebalanced across
source files with UniMax (budget: half the rows, at most 4 epochs), rendered with ChatML and
packed into 4096-token rows. Each repeat runs in a fresh folder; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
TOKENIZER = DATA / "tokenizers" / "qwen2-bpe151k-rebuilt"


def config(budget: int) -> dict[str, object]:
    files = sorted(str(p) for p in DATA.glob("*/*")
                   if p.suffix in (".json", ".jsonl") and p.parent.name != "tokenizers")
    return {
        "tokenizer": str(TOKENIZER), "seed": 0,
        "steps": [
            {"read": {"paths": files}},
            {"length_filter": {"prompt": [1, 4096], "response": [1, 4096], "max_total": 4096}},
            {"exact_dedup": {}},
            {"near_dedup": {"threshold": 0.8}},
            {"rebalance": {"category_column": "source", "method": "unimax", "budget": budget,
                           "max_epochs": 4}},
            {"render": {"template": "chatml"}},
            {"write_shards": {"seq_len": 4096}},
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=18_000, help="rebalance budget (rows)")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the shared data sets are needed)")
        return 0
    import sftfast

    cfg = config(args.budget)
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
            r = sftfast.Pipeline.from_config(cfg).run(tmp, quiet=True, report=True)
            runs.append(r.steps)
            m = sftfast.read_manifest(r.shards)
    files = len(cfg["steps"][0]["read"]["paths"])  # type: ignore[index]
    print(f"sftfast {sftfast.__version__}: {files} files of {DATA}, tokenizer {TOKENIZER.name}, "
          f"{sftfast.get_num_threads()} threads, median of {len(runs)} runs")
    print("| step | rows in | rows out | dropped (by reason) | wall s | CPU s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    total_w = total_c = 0.0
    for i, st in enumerate(runs[0]):
        w = statistics.median(r[i].seconds for r in runs)
        c = statistics.median(r[i].cpu_seconds for r in runs)
        mem = statistics.median(r[i].peak_rss_bytes for r in runs) / 2**20
        total_w, total_c = total_w + w, total_c + c
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(st.dropped.items(), key=lambda kv: -kv[1]))
        added = f" (+{st.added:,} repeats)" if st.added else ""
        print(f"| {st.name} | {st.rows_in:,} | {st.rows_out:,}{added} | {why or '-'} | "
              f"{w:.2f} | {c:.2f} | {mem:,.0f} |")
    print(f"| **total** | | | | **{total_w:.2f}** | **{total_c:.2f}** | |")
    print(f"shards: {m.samples:,} samples, {m.rows:,} rows of {m.seq_len}, {m.tokens:,} tokens, "
          f"efficiency {m.packing.efficiency:.3%}")
    if args.json:
        Path(args.json).write_text(json.dumps([[s.__dict__ for s in r] for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
