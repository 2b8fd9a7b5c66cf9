#!/usr/bin/env python3
"""Exact token-counting throughput: sftfast vs HF `tokenizers` vs `fastokens`.

For every tokenizer x corpus x thread count, each tool runs in its own fresh subprocess: one
warm-up call (reported for sftfast and fastokens as their *cold* figures: the first call in a new
process, with their piece caches empty), then N timed calls; the table shows medians of MB of UTF-8
text per CPU-second (user+sys of all threads, the headline on a shared 2-core machine) and per
wall-second. Every tool's counts are compared row by row with HF `tokenizers`.

    python3 benches/bench_tokenize.py            # full run -> benches/results/tokenize.md
    python3 benches/bench_tokenize.py --quick    # smoke run: 1 repeat, 1 tokenizer
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
CORPORA = {
    "english": ["gpteacher_en", "codealpaca_2k_en", "gsm8k_train_en", "glaive_toolcall_en_demo",
                "fastchat_dummy_conversation_en", "mt_bench_questions_en"],
    "chinese": ["belle_eval_zh", "lawyer_llama_zh", "medicalgpt_medical_sft_zh", "pclue_zh"],
}
TOKENIZERS = ["qwen2-bpe151k-rebuilt", "cl100k_base", "phi-2", "phi-3-mini"]
TOOLS = ["sftfast", "hf", "fastokens"]


# ----------------------------------------------------------------------------- corpora
def read_records(path: Path) -> list:
    """A JSON document, or JSON Lines (some upstream `.json` files are JSON Lines)."""
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def strings(obj) -> list[str]:
    """Every string value, recursively (nested conversations, one-element list wrappers, ...)."""
    if isinstance(obj, str):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    return [s for item in items for s in strings(item)]


def build_corpus(folders: list[str]) -> list[str]:
    texts: list[str] = []
    for folder in folders:
        for path in sorted((DATA / folder).iterdir()):
            if path.suffix in (".json", ".jsonl"):
                texts.extend(strings(read_records(path)))
    return texts


# ----------------------------------------------------------------------------- worker
def make_counter(tool: str, tok_path: str, texts: list[str], threads: int):
    """Load the tokenizer (untimed) and return a zero-arg function giving the counts."""
    if tool == "sftfast":
        import polars as pl
        import sftfast

        sftfast.set_num_threads(threads)
        tok = sftfast.load_tokenizer(tok_path)
        series = pl.Series("text", texts, dtype=pl.String)  # native input; conversion untimed
        return lambda: sftfast.count_tokens(series, tok).to_numpy()
    if tool == "hf":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tok_path)
        return lambda: [len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    if tool == "fastokens":
        import fastokens
        import numpy as np

        tok = fastokens.Tokenizer.from_file(tok_path)

        def count():
            _ids, offsets = tok.encode_batch_flat(texts, add_special_tokens=False)
            return np.diff(np.frombuffer(offsets, np.uint64))

        return count
    raise ValueError(f"unknown tool {tool!r}")


def worker(tool: str, tok_path: str, corpus_file: str, threads: int, repeats: int,
           counts_out: str) -> None:
    """Runs in a fresh subprocess; prints one JSON line of timings."""
    texts = json.loads(Path(corpus_file).read_text(encoding="utf-8"))
    count = make_counter(tool, tok_path, texts, threads)
    runs, first = [], None
    for _ in range(repeats + 1):  # run 0 is the warm-up (= cold first call)
        c0, w0 = time.process_time(), time.perf_counter()
        counts = count()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        counts = array("I", map(int, counts))
        first = counts if first is None else first
        runs.append({"cpu": cpu, "wall": wall, "same_as_first": counts == first})
    Path(counts_out).write_bytes(first.tobytes())
    print(json.dumps({"runs": runs}))


# ----------------------------------------------------------------------------- driver
def run_worker(tool: str, tok_path: str, corpus_file: Path, threads: int, repeats: int,
               tmp: Path) -> tuple[list[dict], array]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTOKENS_INPUT_CACHE", "FASTOKENS_SEGMENT_CACHE")}  # caches off
    env.update(RAYON_NUM_THREADS=str(threads), FASTOKENS_BPE_THREADS=str(threads),
               SFTFAST_NUM_THREADS=str(threads), POLARS_MAX_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="true" if threads > 1 else "false")
    counts_out = tmp / f"{tool}-{threads}.u32"
    cmd = [sys.executable, __file__, "--worker", tool, tok_path, str(corpus_file), str(threads),
           str(repeats), str(counts_out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"worker failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    counts = array("I")
    counts.frombytes(counts_out.read_bytes())
    return json.loads(proc.stdout.strip().splitlines()[-1])["runs"], counts


def compare(counts: array, ref: array, texts: list[str], label: str, mismatches: list) -> str:
    if len(counts) != len(ref):
        return f"**no (length {len(counts)} vs {len(ref)})**"
    bad = [i for i, (a, b) in enumerate(zip(counts, ref)) if a != b]
    if bad:
        i = bad[0]
        mismatches.append(f"- {label}: {len(bad)} of {len(ref)} rows differ; first row {i}: "
                          f"{counts[i]} vs HF {ref[i]}, text {texts[i][:200]!r}")
        return f"**no ({len(bad)} rows)**"
    return "yes"


def fmt(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def bench_config(tok_name: str, corpus: str, texts: list[str], mb: float, threads: int,
                 repeats: int, tmp: Path, mismatches: list[str]) -> list[str]:
    """All tools on one tokenizer x corpus x thread count; returns the table rows."""
    tok_path = str(DATA / "tokenizers" / tok_name / "tokenizer.json")
    label = f"{tok_name}/{corpus}/{threads}t"
    res, counts = {}, {}
    for tool in TOOLS:
        print(f"[{time.strftime('%H:%M:%S')}] {label} {tool}", file=sys.stderr, flush=True)
        runs, counts[tool] = run_worker(tool, tok_path, tmp / f"{corpus}.json", threads,
                                        repeats, tmp)
        res[tool] = (mb / statistics.median(r["cpu"] for r in runs[1:]),
                     mb / statistics.median(r["wall"] for r in runs[1:]))
        if tool != "hf":
            res[f"{tool} (cold)"] = (mb / runs[0]["cpu"], mb / runs[0]["wall"])
        if not all(r["same_as_first"] for r in runs):
            mismatches.append(f"- {label} {tool}: counts changed between repeats in one process")
    same = {tool: compare(counts[tool], counts["hf"], texts, f"{label} {tool}", mismatches)
            for tool in ("sftfast", "fastokens")}
    same.update({"hf": "reference", "sftfast (cold)": same["sftfast"],
                 "fastokens (cold)": same["fastokens"]})
    rows = []
    for tool in ["sftfast", "sftfast (cold)", "hf", "fastokens", "fastokens (cold)"]:
        cpu, wall = res[tool]
        ours = tool.startswith("sftfast")
        cold = " (cold)" if tool.endswith("(cold)") else ""
        r_hf = fmt(cpu / res["hf"][0]) if ours else ""
        r_ft = fmt(cpu / res[f"fastokens{cold}"][0]) if ours else ""
        rows.append(f"| {tok_name} | {corpus} | {threads} | {tool} | {fmt(cpu)} | {fmt(wall)} "
                    f"| {r_hf} | {r_ft} | {same[tool]} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1 tokenizer")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs after 1 warm-up (5)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (1 2)")
    ap.add_argument("--tokenizers", nargs="+", default=TOKENIZERS, choices=TOKENIZERS)
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument("--out", type=Path, help="Markdown output (default benches/results/"
                                             "tokenize.md; tokenize-quick.md with --quick)")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        tool, tok_path, corpus_file, threads, repeats, counts_out = args.worker
        return worker(tool, tok_path, corpus_file, int(threads), int(repeats), counts_out)
    if not DATA.is_dir():
        sys.exit(f"bench_tokenize: shared data not found at {DATA} (expected <repo>/../shared). "
                 "This benchmark needs the real SFT corpora and tokenizer fixtures there.")
    if args.quick:
        args.repeats, args.tokenizers = 1, args.tokenizers[:1]
    out = args.out or REPO / "benches/results" / f"tokenize{'-quick' if args.quick else ''}.md"

    import fastokens  # noqa: F401  (fail early, before minutes of work)
    import sftfast
    import tokenizers

    head = [f"Command: `python3 {shlex.join(sys.argv)}`", "",
            f"sftfast {sftfast.__version__}, tokenizers {tokenizers.__version__}, fastokens "
            f"{_version('fastokens')}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), load average at start "
            f"{os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}", ""]
    mismatches: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_tokenize-") as tmpdir:
        tmp = Path(tmpdir)
        corpora = {}
        for name in args.corpora:
            texts = build_corpus(CORPORA[name])
            mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
            (tmp / f"{name}.json").write_text(json.dumps(texts, ensure_ascii=False), "utf-8")
            corpora[name] = (texts, mb)
            head.append(f"- corpus **{name}**: {len(texts):,} strings, {mb:.2f} MB UTF-8 "
                        f"({', '.join(CORPORA[name])})")
        head += ["", f"Median of {args.repeats} timed run(s) after 1 warm-up, each (tool, threads) "
                 "in its own subprocess. Ratios use MB/CPU-s. `(cold)` = the warm-up call, i.e. "
                 "the first call in a fresh process (empty piece caches); sftfast cold is "
                 "compared with fastokens cold and with HF's median (HF's small word cache "
                 "makes its warm-up run about as fast as its later ones). sftfast is timed on a `pl.Series` (its native "
                 "input; list -> Series conversion untimed), HF and fastokens on a `list[str]`. "
                 "Counts are compared row by row with HF.", ""]
        table = ["| tokenizer | corpus | threads | tool | MB/CPU-s | MB/s wall | sftfast/HF "
                 "| sftfast/fastokens | counts identical |", "|" + "---|" * 9]
        for tok_name in args.tokenizers:
            for corpus, (texts, mb) in corpora.items():
                for threads in args.threads:
                    table += bench_config(tok_name, corpus, texts, mb, threads, args.repeats,
                                          tmp, mismatches)
                    print("\n".join(table[-5:]), file=sys.stderr, flush=True)
    head[2] += f", load average at end {os.getloadavg()[0]:.2f}"
    text = "\n".join(head + table + ["", "Mismatches:", ""] + (mismatches or ["- none"])) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
