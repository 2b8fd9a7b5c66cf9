#!/usr/bin/env python3
"""Chat-template rendering + tokenising + assistant mask: sftfast vs transformers (issue #3).

The conversations: every row `sftfast.read` keeps of the multi-turn sets in `../shared/data`
(fastchat_dummy_conversation_en, glaive_toolcall_en_demo, medicalgpt_medical_sft_zh, lawyer_llama_zh
legal_counsel_multi_turn_with_article_v2), optionally replicated. Template: the built-in
`chatml` (it has `{% generation %}` blocks, so transformers computes the mask too). Tokenizers:
the rebuilt Qwen2 byte-level BPE (sftfast's fast path) and phi-3-mini (SentencePiece-style
BPE: sftfast's reference tokenizer path), both as transformers tokenizer objects.

Engines, each run in its own fresh subprocess per (tokenizer, threads, repeat):

- `hf-loop`:  `tok.apply_chat_template(conv, chat_template=..., tokenize=True,
  return_dict=True, return_assistant_tokens_mask=True)` per conversation;
- `hf-batch`: the same call once on the list of all conversations (transformers renders them
  one by one, then tokenises the batch, in parallel with RAYON_NUM_THREADS threads);
- `sftfast`:  `sftfast.render(df, tok, template="chatml")` on a DataFrame of the canonical rows
  (the tokenizer converted once with `sftfast.load_tokenizer(tok)`, untimed, like transformers'
  own loading).

Each subprocess times `--passes` passes over the same conversations (pass 1 = *cold*: the first
call in the process, template compile and empty caches included; later passes = *warm*: the
piece caches hold every text). CPU time is user+sys of the whole process (all threads), from
`getrusage`. The table shows medians over `--repeats` subprocesses; the ratio is sftfast's
conversations per CPU-second over the better of the two transformers routes, at the same
thread count, in the same run. Every engine's `input_ids` and masks are hashed and must be
identical.

    python3 benches/bench_render.py                 # -> benches/results/render.md
    python3 benches/bench_render.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETS = ["fastchat_dummy_conversation_en", "glaive_toolcall_en_demo", "medicalgpt_medical_sft_zh",
        "lawyer_llama_zh/legal_counsel_multi_turn_with_article_v2.json"]
TOKENIZERS = {"qwen2": "qwen2-bpe151k-rebuilt", "phi-3-mini": "phi-3-mini"}
ENGINES = ["hf-loop", "hf-batch", "sftfast"]
TEMPLATE = "chatml"


# ----------------------------------------------------------------------------- worker
def load_hf(name: str):
    import transformers

    d = DATA / "tokenizers" / TOKENIZERS[name]
    if name == "phi-3-mini":  # its tokenizer_config.json: transformers' Llama normaliser rewrite
        return transformers.AutoTokenizer.from_pretrained(str(d))
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))


def load_frame(replicate: int):
    import polars as pl
    import sftfast

    df = sftfast.read([DATA / s for s in SETS]).frame.select("messages", "system").collect()
    return pl.concat([df] * replicate) if replicate > 1 else df


def cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def digest(ids: list[list[int]], masks: list[list[int]]) -> str:
    h = hashlib.sha256()
    for a, m in zip(ids, masks):
        h.update(array("I", [len(a)]).tobytes() + array("I", a).tobytes() + bytes(m))
    return h.hexdigest()[:16]


def worker(engine: str, tok_name: str, passes: int, replicate: int) -> None:
    """Runs in a fresh subprocess; prints one JSON line."""
    from sftfast.render import builtin_template

    tok = load_hf(tok_name)
    df = load_frame(replicate)
    if engine == "sftfast":
        import sftfast

        stok = sftfast.load_tokenizer(tok)

        def run():
            out = sftfast.render(df, stok, template=TEMPLATE)
            assert out.rejected.height == 0, out.rejected
            return out.frame

        def result(frame):
            ids, labels = frame["input_ids"].to_list(), frame["labels"].to_list()
            assert all(lab in (-100, i) for a, b in zip(ids, labels) for i, lab in zip(a, b))
            return ids, [[int(x != -100) for x in lab] for lab in labels]
    else:
        src = builtin_template(TEMPLATE)
        convs = []
        for msgs, system in zip(df["messages"].to_list(), df["system"].to_list()):
            conv = [] if system is None else [{"role": "system", "content": system}]
            conv += [{"role": "assistant" if m["role"] == "tool_call" else m["role"],
                      "content": m["content"]} for m in msgs]
            convs.append(conv)
        kw = {"chat_template": src, "tokenize": True, "return_dict": True,
                  "return_assistant_tokens_mask": True}

        def run():
            if engine == "hf-batch":
                return tok.apply_chat_template(convs, **kw)
            return [tok.apply_chat_template(c, **kw) for c in convs]

        def result(out):
            if engine == "hf-batch":
                return ([list(x) for x in out["input_ids"]],
                        [list(x) for x in out["assistant_masks"]])
            return [list(r["input_ids"]) for r in out], [list(r["assistant_masks"]) for r in out]

    runs, hashes = [], []
    for _ in range(passes):
        c0, w0 = cpu_now(), time.perf_counter()
        out = run()
        cpu, wall = cpu_now() - c0, time.perf_counter() - w0
        ids, masks = result(out)
        hashes.append(digest(ids, masks))
        runs.append({"cpu": cpu, "wall": wall})
    tokens = sum(len(a) for a in ids)
    learned = sum(sum(m) for m in masks)
    print(json.dumps({"runs": runs, "hashes": hashes, "rows": len(ids), "tokens": tokens,
                      "learned": learned}))


# ----------------------------------------------------------------------------- driver
def run_worker(engine: str, tok_name: str, threads: int, passes: int, replicate: int) -> dict:
    env = dict(os.environ, SFTFAST_NUM_THREADS=str(threads), POLARS_MAX_THREADS=str(threads),
               RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="true" if threads > 1 else "false",
               TRANSFORMERS_VERBOSITY="error")
    cmd = [sys.executable, __file__, "--worker", engine, tok_name, str(passes), str(replicate)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"worker failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 2 passes, qwen2")
    ap.add_argument("--repeats", type=int, default=3, help="fresh subprocesses per config (3)")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per subprocess (3)")
    ap.add_argument("--replicate", type=int, default=1,
                    help="concatenate the conversations N times (1: every text distinct)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=list(TOKENIZERS))
    ap.add_argument("--out", type=Path, help="Markdown output (default benches/results/render.md;"
                                             " render-quick.md with --quick)")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        engine, tok_name, passes, replicate = args.worker
        return worker(engine, tok_name, int(passes), int(replicate))
    if not DATA.is_dir():
        sys.exit(f"bench_render: shared data not found at {DATA} (expected <repo>/../shared)")
    if args.quick:
        args.repeats, args.passes, args.tokenizers = 1, 2, args.tokenizers[:1]
    out_path = args.out or REPO / "benches/results" / f"render{'-quick' if args.quick else ''}.md"

    import polars as pl
    import sftfast
    import transformers

    df = load_frame(args.replicate)
    n_chars = df.select(pl.col("messages").list.eval(pl.element().struct.field("content")
                                                     .str.len_bytes()).list.sum().sum()).item()
    head = [f"Command: `python3 {shlex.join(sys.argv)}`", "",
            (f"sftfast {sftfast.__version__}, transformers {transformers.__version__}, polars "
            f"{pl.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), load average at start "
            f"{os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}"), "",
            (f"Data: {df.height:,} conversations ({args.replicate} x the rows `sftfast.read` keeps "
            f"of {', '.join(SETS)}), {n_chars / 1e6:.2f} MB of message text. Template: built-in "
            f"`{TEMPLATE}` (generation blocks). Medians of {args.repeats} fresh subprocesses per "
            f"row; each times {args.passes} passes (pass 1 = cold, warm = median of the later "
            "ones). conv/CPU-s = conversations per CPU-second (user+sys, all threads). "
            "Ratio = sftfast / the faster transformers route (per CPU-second), same tokenizer and "
            "thread count."), ""]
    results: dict[tuple[str, int, str], list[dict]] = {}
    for rep in range(args.repeats):  # interleaved: each repeat runs every config once
        for tok_name in args.tokenizers:
            for threads in args.threads:
                for engine in ENGINES:
                    print(f"[{time.strftime('%H:%M:%S')}] repeat {rep + 1}: {tok_name} "
                          f"{threads}t {engine}", file=sys.stderr, flush=True)
                    results.setdefault((tok_name, threads, engine), []).append(
                        run_worker(engine, tok_name, threads, args.passes, args.replicate))

    table = [("| tokenizer | threads | engine | cold CPU-s | cold conv/CPU-s | cold ×HF "
             "| warm CPU-s | warm conv/CPU-s | warm ×HF | warm wall s | output |"),
             "|" + "---|" * 11]
    mismatches, summary = [], []
    for tok_name in args.tokenizers:
        ref_hash = None
        for threads in args.threads:
            stat = {}
            for engine in ENGINES:
                rs = results[(tok_name, threads, engine)]
                cold = statistics.median(r["runs"][0]["cpu"] for r in rs)
                later = [statistics.median(x["cpu"] for x in r["runs"][1:]) for r in rs
                         if len(r["runs"]) > 1] or [cold]
                wall = [statistics.median(x["wall"] for x in r["runs"][1:] or r["runs"][:1])
                        for r in rs]
                stat[engine] = (cold, statistics.median(later), statistics.median(wall))
                hashes = {h for r in rs for h in r["hashes"]}
                ref_hash = ref_hash or next(iter(hashes))
                if hashes != {ref_hash}:
                    mismatches.append(f"- {tok_name} {threads}t {engine}: output hash "
                                      f"{sorted(hashes)} != {ref_hash}")
                info = rs[0]
            rows = info["rows"]
            best_cold = min(stat["hf-loop"][0], stat["hf-batch"][0])
            best_warm = min(stat["hf-loop"][1], stat["hf-batch"][1])
            for engine in ENGINES:
                cold, warm, wall = stat[engine]
                rc = f"**{best_cold / cold:.1f}**" if engine == "sftfast" else ""
                rw = f"**{best_warm / warm:.1f}**" if engine == "sftfast" else ""
                same = "reference" if engine == "hf-loop" else (
                    "identical" if not any(f"{tok_name} {threads}t {engine}" in m
                                           for m in mismatches) else "**differs**")
                table.append(f"| {tok_name} | {threads} | {engine} | {cold:.3f} | "
                             f"{fmt(rows / cold)} | {rc} | {warm:.3f} | {fmt(rows / warm)} | "
                             f"{rw} | {wall:.3f} | {same} |")
            summary.append(f"- {tok_name}, {threads} thread(s): sftfast "
                           f"{best_cold / stat['sftfast'][0]:.1f}x (cold) / "
                           f"{best_warm / stat['sftfast'][1]:.1f}x (warm) the faster "
                           "transformers route per CPU-second")
        head.append(f"- {tok_name}: {info['tokens']:,} tokens per pass, {info['learned']:,} "
                    "learned (assistant mask)")
    head[2] += f", load average at end {os.getloadavg()[0]:.2f}"
    text = "\n".join(head + [""] + table + ["", "Summary:", ""] + summary
                     + ["", ("Output mismatches (input_ids + assistant mask, every row, every "
                        "pass, against hf-loop):"), ""] + (mismatches or ["- none"])) + "\n"
    print(text)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    print(f"wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
