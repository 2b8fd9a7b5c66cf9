#!/usr/bin/env python3
"""Exact and near duplicates in the real SFT sets of `../shared/data`.

For every data set: all its files through `sftfast.io.scan_inputs`, the text of a row = its
string columns joined by newlines, then `sftfast.exact_dedup` and `sftfast.near_dedup`
(threshold 0.8, 128 permutations, word 5-grams; CJK characters as tokens). Prints a Markdown
table and the largest near-duplicate cluster of each set, for inspection.

    python3 benches/dedup_real_data.py
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import polars as pl

import sftfast
from sftfast.io import scan_inputs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    print(f"Command: `python3 {shlex.join(sys.argv)}`\n")
    print("| data set | rows | exact dups | near dups | clusters | largest | MB | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    examples: list[str] = []
    notes: list[str] = []
    for folder in sorted(p for p in DATA.iterdir() if p.is_dir() and p.name != "tokenizers"):
        files = sorted(str(f) for f in folder.iterdir()
                       if f.suffix in (".json", ".jsonl", ".parquet", ".csv"))
        if not files:
            continue
        readable, skipped = [], []
        for f in files:
            try:
                scan_inputs([f]).frame.collect_schema()
                readable.append(f)
            except sftfast.InputError as exc:  # shapes the reader of issue #3 will handle
                skipped.append(f"{Path(f).name}: {str(exc).split(': ', 1)[-1][:80]}")
        notes.extend(f"- {folder.name}/{s} (skipped)" for s in skipped)
        if not readable:
            continue
        df = scan_inputs(readable).frame.collect()
        cols = [c for c, t in df.schema.items() if t == pl.String and not c.startswith("sft_")]
        if not cols:
            notes.append(f"- {folder.name}: no string columns (nested turns; issue #3's reader)")
            continue
        df = df.select(text=pl.concat_str([pl.col(c) for c in cols], separator="\n",
                                          ignore_nulls=True))
        t0 = time.perf_counter()
        ex = sftfast.exact_dedup(df, "text")
        nd = sftfast.near_dedup(df, "text")
        dt = time.perf_counter() - t0
        sample = nd.sample_clusters(1, texts=df["text"])
        largest = int(sample["size"][0]) if sample.height else 1
        mb = df["text"].str.len_bytes().sum() / 1e6
        print(f"| {folder.name} | {df.height:,} | {ex.duplicates:,} | {nd.stats.duplicates:,} "
              f"| {nd.stats.clusters:,} | {largest} | {mb:.1f} | {dt:.2f} |")
        if sample.height:
            texts = [t[:100].replace("\n", " ") for t in sample["text"][0][:3]]
            examples.append(f"- {folder.name}: cluster of {largest}: {texts}")
    print("\nLargest cluster per set (first 3 members, first 100 chars):\n")
    print("\n".join(examples))
    if notes:
        print("\nFiles the current reader cannot load yet:\n")
        print("\n".join(notes))


if __name__ == "__main__":
    main()
