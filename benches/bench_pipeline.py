#!/usr/bin/env python3
"""End to end (issue #7): `sftfast.Pipeline` vs the same steps built from the usual tools.

Input: synthetic OpenAI-`messages` JSONL (`_pipeline_common.py`: `sftfast.demo_frame` rows,
English and Chinese, plus system prompts, multi-turn rows, ~1% overlong rows, ~3% exact and ~5%
near duplicates), generated once per (rows, seed) and cached in `--data-dir`.

Steps, same parameters on both sides (tokenizer: the Qwen2-style 151k BPE of `../shared`):
  read           JSONL -> rows
  length_filter  prompt (system + non-assistant turns joined by "\\n") and response (assistant
                 turns joined) each 1..4096 tokens, total <= 4096; null/empty turns dropped;
                 tokens of the plain text, no template, no special tokens
  exact_dedup    key of the whole conversation (every content joined by "\\n"), NFKC +
                 lowercase + whitespace folding (sftfast's step default: punctuation kept),
                 128-bit hash; keep the first row
  near_dedup     MinHash 128 permutations, word 5-grams with CJK characters as single tokens
                 (NFKC, lowercase; the reference shingling of `../shared/bench/dedup/common.py`),
                 LSH at threshold 0.8 with sftfast's bands (16 x 8, queried from sftfast; the
                 same banding passed to datasketch as `params`), clusters by union-find, keep
                 the first row of each cluster; rows without tokens never match
  rebalance      per category at most CAP rows (`--cap-frac` x rows), seeded selection, no
                 repeats (sftfast `method="cap"` with `max_epochs=1`: its `cap` alone also
                 up-samples smaller categories to min(cap, 4 x size))
  render         ChatML (sftfast's built-in `chatml`, with `{% generation %}` blocks),
                 assistant tokens learned
  pack + write   4096-token rows, best-fit decreasing, samples over 4096 truncated on the right

Baseline (the usual tools, single process: `num_proc=None` everywhere, `tokenizers` and
`datasets` use their own threads): HF `datasets` `load_dataset("json")` into a fresh
`cache_dir`, `.map(batched=True)` / `.filter(batched=True)` / `.select`; `tokenizers`
`Tokenizer.from_file(...).encode_batch_fast` (no offsets; the faster form of `encode_batch`)
for the lengths; `hashlib.md5` of the normalised text with a `set` for exact dedup;
datasketch `MinHash.bulk` in a map, then `MinHashLSH(threshold=0.8, num_perm=128,
params=(16, 8))` `insertion_session` + one `query` per row; numpy seeded choice per category;
transformers `PreTrainedTokenizerFast.apply_chat_template(batch, tokenize=True,
return_dict=True, return_assistant_tokens_mask=True)` in a map (the mask kept as TRL keeps it,
`assistant_masks`, from which its collator builds the labels); TRL `pack_dataset(strategy="bfd")`
(BFD per 1,000-row batch); `save_to_disk`.
sftfast: `sftfast.Pipeline.from_config(cfg).run(out, quiet=True, force=True)`, the same steps.

Measured: each (tool, repeat) in a fresh subprocess, tools interleaved. Per step: CPU-s of the
process and its reaped children (`process_time` + `RUSAGE_CHILDREN`), wall-s, peak RSS of the
process over the step (`/proc/self/clear_refs` reset), rows in/out and drop reasons (sftfast:
its own `StepStats`). "run" = from before the first step to after the last (imports excluded
on both sides); the whole process's CPU-s and peak RSS (`wait4`) are recorded too. Outputs go
to a fresh folder under `--tmp` (local disk), removed after each run. Ratios are medians of
the baseline over medians of sftfast, from the same invocation.

    python3 benches/bench_pipeline.py --rows 100000 --repeats 3
    python3 benches/bench_pipeline.py --rows 1000000 --repeats 1 --json /tmp/pipeline-1M.json
    python3 benches/bench_pipeline.py --rows 20000 --repeats 1 --tools baseline
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchutil import versions as _versions
from _pipeline_common import Meter, cpu_now, ensure_data

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2-bpe151k-rebuilt"
TOOLS = ["sftfast", "baseline"]
SFTFAST_MISSING = 3
MAX_LEN, SEQ_LEN, THRESHOLD, NUM_PERM, NGRAM = 4096, 4096, 0.8, 128, 5


# ----------------------------------------------------------------------------- baseline
def _contents(msgs, assistant: bool | None):
    if assistant is None:
        return [m["content"] for m in msgs]
    return [m["content"] for m in msgs if (m["role"] == "assistant") == assistant]


def _norm_exact(text: str) -> bytes:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split()).encode("utf-8")


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+")


def _shingles(text: str, n: int) -> list[bytes]:
    """The reference shingling (`../shared/bench/dedup/common.py`), as UTF-8 bytes."""
    toks = TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())
    if len(toks) < n:
        return [" ".join(toks).encode()] if toks else []
    return [s.encode() for s in {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}]


def run_baseline(spec: dict) -> dict:
    import hashlib
    from collections import Counter

    import numpy as np
    import pyarrow.compute as pc
    from datasets import disable_progress_bars, load_dataset
    from datasets.utils.logging import set_verbosity_error
    from datasketch import LeanMinHash, MinHash, MinHashLSH
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from trl import pack_dataset

    disable_progress_bars()
    set_verbosity_error()
    work = Path(spec["work"])
    meter = Meter()
    seed, cap, bands = spec["seed"], spec["cap"], spec["bands"]
    c0, w0 = cpu_now(), time.perf_counter()

    with meter.step("read") as rec:
        ds = load_dataset("json", data_files=spec["data"], split="train",
                          cache_dir=str(work / "hf-cache"))
        rec["rows_in"] = rec["rows_out"] = len(ds)

    with meter.step("length_filter", len(ds)) as rec:
        tok = Tokenizer.from_file(spec["tokenizer_json"])
        tok.no_padding()
        tok.no_truncation()
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

        def lengths(batch):
            prompts, responses, bad_p, bad_r = [], [], [], []
            for msgs in batch:
                p, r = _contents(msgs, False), _contents(msgs, True)
                bad_p.append(not p or any(c is None or not c.strip() for c in p))
                bad_r.append(not r or any(c is None or not c.strip() for c in r))
                prompts.append("" if bad_p[-1] else "\n".join(p))
                responses.append("" if bad_r[-1] else "\n".join(r))
            texts = [t for t in prompts + responses if t]
            counts = iter([len(e) for e in encode(texts, add_special_tokens=False)])
            n_p = [next(counts) if t else 0 for t in prompts]
            n_r = [next(counts) if t else 0 for t in responses]
            reasons = []
            for bp, br, a, b in zip(bad_p, bad_r, n_p, n_r):
                reasons.append("empty:prompt" if bp else "too_short:prompt" if a < 1 else
                               "too_long:prompt" if a > MAX_LEN else "empty:response" if br else
                               "too_short:response" if b < 1 else "too_long:response"
                               if b > MAX_LEN else "too_long:total" if a + b > MAX_LEN else None)
            return {"_reason": reasons}

        ds = ds.map(lengths, batched=True, input_columns="messages")
        rec["dropped"] = dict(Counter(r for r in ds["_reason"] if r is not None))
        ds = ds.filter(lambda r: [x is None for x in r], batched=True, input_columns="_reason")
        rec["rows_out"] = len(ds)

    with meter.step("exact_dedup", len(ds)) as rec:
        def key(batch):
            return {"_key": [hashlib.md5(_norm_exact("\n".join(_contents(m, None)))).digest()
                             for m in batch]}

        ds = ds.map(key, batched=True, input_columns="messages")
        seen: set = set()

        def first(keys):
            out = []
            for k in keys:
                out.append(k not in seen)
                seen.add(k)
            return out

        n_in = len(ds)
        ds = ds.filter(first, batched=True, input_columns="_key")
        rec["rows_out"] = len(ds)
        rec["dropped"] = {"exact_duplicate": n_in - len(ds)}

    with meter.step("near_dedup", len(ds)) as rec:
        def signatures(batch):
            sh = [_shingles("\n".join(_contents(m, None)), NGRAM) for m in batch]
            mhs = MinHash.bulk(sh, num_perm=NUM_PERM, seed=seed)
            return {"_sig": [m.hashvalues if s else None for m, s in zip(mhs, sh)]}

        ds = ds.map(signatures, batched=True, input_columns="messages")
        scheme = MinHash(num_perm=NUM_PERM, seed=seed).scheme
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=tuple(bands))
        mhs: list = []
        for batch in ds.select_columns(["_sig"]).with_format("arrow").iter(batch_size=10_000):
            col = batch["_sig"]
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(col).to_numpy().reshape(-1, NUM_PERM)
            it = iter(flat)
            mhs.extend(LeanMinHash(seed=seed, hashvalues=next(it), scheme=scheme) if v else None
                       for v in valid)
        with lsh.insertion_session() as session:
            for i, m in enumerate(mhs):
                if m is not None:
                    session.insert(i, m, check_duplication=False)
        parent = list(range(len(mhs)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, m in enumerate(mhs):
            if m is None:
                continue
            for j in lsh.query(m):
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the root is the cluster's first row
        keep = np.fromiter((find(i) == i for i in range(len(mhs))), dtype=bool, count=len(mhs))
        del mhs, lsh
        ds = ds.select(np.flatnonzero(keep))
        rec["rows_out"] = len(ds)
        rec["dropped"] = {"near_duplicate": int((~keep).sum())}

    with meter.step("rebalance", len(ds)) as rec:
        cats = ds.with_format("arrow")["category"].to_numpy()
        rng = np.random.default_rng(seed)
        picked = []
        for c in sorted(set(cats.tolist())):
            idx = np.flatnonzero(cats == c)
            picked.append(np.sort(rng.choice(idx, cap, replace=False)) if len(idx) > cap else idx)
        sel = np.sort(np.concatenate(picked))
        rec["dropped"] = {"rebalance:not_selected": len(ds) - len(sel)}
        ds = ds.select(sel)
        rec["rows_out"] = len(ds)

    with meter.step("render", len(ds)) as rec:
        hf = PreTrainedTokenizerFast(tokenizer_file=spec["tokenizer_json"])
        template = spec["template"]

        def render(batch):
            out = hf.apply_chat_template(batch, chat_template=template, tokenize=True,
                                         return_dict=True, return_assistant_tokens_mask=True)
            return {"input_ids": out["input_ids"], "assistant_masks": out["assistant_masks"]}

        ds = ds.map(render, batched=True, input_columns="messages",
                    remove_columns=ds.column_names)
        rec["rows_out"] = len(ds)
    rendered = ds

    with meter.step("pack", len(ds)) as rec:
        ds = pack_dataset(ds, SEQ_LEN, strategy="bfd")
        rec["rows_out"] = len(ds)

    with meter.step("write", len(ds)) as rec:
        ds.save_to_disk(str(work / "packed"))
        rec["rows_out"] = len(ds)
    run = {"cpu": cpu_now() - c0, "wall": time.perf_counter() - w0}

    # Untimed: what was written.
    lens = pc.list_value_length(rendered.with_format("arrow")["input_ids"]).to_numpy()
    packed_lens = pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy()
    masks = rendered.with_format("arrow")["assistant_masks"]
    out = {"steps": meter.steps, "run": run, "samples": len(lens),
           "tokens_rendered": int(lens.sum()), "samples_truncated": int((lens > SEQ_LEN).sum()),
           "tokens_lost": int(np.maximum(lens - SEQ_LEN, 0).sum()),
           "loss_tokens": int(pc.sum(pc.list_flatten(masks)).as_py()),
           "packed_rows": len(packed_lens), "tokens_packed": int(packed_lens.sum()),
           "bytes_written": sum(f.stat().st_size for f in (work / "packed").rglob("*")
                                if f.is_file())}
    return out


# ----------------------------------------------------------------------------- sftfast
def run_sftfast(spec: dict) -> dict:
    import sftfast

    if not hasattr(sftfast, "Pipeline"):
        sys.exit(SFTFAST_MISSING)
    from sftfast.shards import read_manifest

    work = Path(spec["work"])
    cfg = {
        "tokenizer": spec["tokenizer_json"], "seed": spec["seed"],
        "steps": [
            {"read": {"paths": [spec["data"]]}},
            {"length_filter": {"prompt": [1, MAX_LEN], "response": [1, MAX_LEN],
                               "max_total": MAX_LEN}},
            {"exact_dedup": {}},
            {"near_dedup": {"threshold": THRESHOLD, "num_perm": NUM_PERM}},
            # max_epochs=1: at most `cap` rows per category, no repeats (without it, `cap`
            # also up-samples smaller categories to min(cap, 4 x size)).
            {"rebalance": {"category_column": "category", "method": "cap", "cap": spec["cap"],
                           "max_epochs": 1, "seed": spec["seed"]}},
            {"render": {"template": "chatml"}},
            {"write_shards": {"seq_len": SEQ_LEN}},
        ],
    }
    c0, w0 = cpu_now(), time.perf_counter()
    result = sftfast.Pipeline.from_config(cfg).run(work / "sftfast", quiet=True, force=True)
    run = {"cpu": cpu_now() - c0, "wall": time.perf_counter() - w0}
    steps = [{"name": s.name, "rows_in": s.rows_in, "rows_out": s.rows_out,
              "dropped": dict(s.dropped), "added": s.added, "cpu": s.cpu_seconds,
              "wall": s.seconds, "peak_rss_mb": s.peak_rss_bytes / 2**20} for s in result.steps]
    out: dict = {"steps": steps, "run": run}
    if result.shards is not None:
        m = read_manifest(result.shards)
        pk = m.packing
        out.update(samples=m.samples, packed_rows=m.rows, tokens_packed=m.tokens,
                   loss_tokens=m.loss_tokens, samples_truncated=pk.truncated,
                   tokens_lost=pk.tokens_lost, tokens_rendered=m.tokens + pk.tokens_lost,
                   bytes_written=sum(f.stat().st_size for f in Path(result.shards).rglob("*")
                                     if f.is_file()))
    return out


def worker(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    res = run_baseline(spec) if spec["tool"] == "baseline" else run_sftfast(spec)
    Path(spec["result"]).write_text(json.dumps(res))


# ----------------------------------------------------------------------------- driver
def measure(spec: dict, tmp: Path) -> dict | None:
    """Run one (tool, repeat) in a fresh subprocess; its result plus wait4's totals."""
    spec_file = tmp / "spec.json"
    spec["result"] = str(tmp / "result.json")
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--worker", str(spec_file)]
    err_path = tmp / "worker.err"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="true")
    with open(err_path, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fe, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == SFTFAST_MISSING:
        return None
    if code != 0:
        print(f"worker failed ({code}): {shlex.join(cmd)}\n{err_path.read_text()[-4000:]}",
              flush=True)
        return {"failed": code}
    res = json.loads(Path(spec["result"]).read_text())
    res.update(process_cpu=ru.ru_utime + ru.ru_stime, process_peak_rss_mb=ru.ru_maxrss / 1024)
    return res


def near_bands() -> list[int]:
    """sftfast's default banding at (threshold, num_perm) as (bands, rows per band)."""
    try:
        import polars as pl
        import sftfast

        rows = sftfast.near_dedup(pl.DataFrame({"text": ["a b c d e f"]}), "text",
                                  threshold=THRESHOLD, num_perm=NUM_PERM).stats.rows_per_band
        if len(set(rows)) == 1:
            return [len(rows), rows[0]]
        print(f"sftfast bands are uneven {rows}; datasketch gets {len(rows)} x {rows[-1]}")
        return [len(rows), rows[-1]]
    except Exception as e:  # noqa: BLE001 - report and fall back to the documented default
        print(f"could not query sftfast's bands ({e}); using 16 x 8")
        return [16, 8]


def versions() -> str:
    return _versions(["sftfast", "datasets", "datasketch", "tokenizers", "transformers", "trl",
              "pyarrow", "polars"])


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_dropped(d: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def report(runs: dict[str, list[dict]]) -> str:
    lines = ["| tool | step | rows in | rows out | dropped | CPU-s | wall s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for tool, rs in runs.items():
        if not rs:
            continue
        for i, st in enumerate(rs[0]["steps"]):
            cpu = med([r["steps"][i]["cpu"] for r in rs])
            wall = med([r["steps"][i]["wall"] for r in rs])
            rss = max(r["steps"][i]["peak_rss_mb"] for r in rs)
            lines.append(f"| {tool} | {st['name']} | {st['rows_in'] or 0:,} | "
                         f"{st['rows_out'] or 0:,} | {fmt_dropped(st['dropped'])} | {cpu:.2f} | "
                         f"{wall:.2f} | {rss:,.0f} |")
        cpu, wall = med([r["run"]["cpu"] for r in rs]), med([r["run"]["wall"] for r in rs])
        pcpu = med([r["process_cpu"] for r in rs])
        prss = max(r["process_peak_rss_mb"] for r in rs)
        lines.append(f"| {tool} | **run** | | | | **{cpu:.2f}** | **{wall:.2f}** | "
                     f"{prss:,.0f} (process) |")
        lines.append(f"| {tool} | (whole process, imports included) | | | | {pcpu:.2f} | | |")
    lines.append("")
    for tool, rs in runs.items():
        if rs:
            r = rs[0]
            keys = ["samples", "tokens_rendered", "loss_tokens", "samples_truncated",
                    "tokens_lost", "packed_rows", "tokens_packed", "bytes_written"]
            vals = ", ".join(f"{k} {r[k]:,}" for k in keys if k in r)
            eff = (r["tokens_packed"] / (r["packed_rows"] * SEQ_LEN)
                   if r.get("packed_rows") else float("nan"))
            lines.append(f"- {tool}: {vals}, packing efficiency {eff:.3%}; per-run CPU-s "
                         + ", ".join(f"{x['run']['cpu']:.1f}" for x in rs))
    if runs.get("baseline") and runs.get("sftfast"):
        b = runs["baseline"]
        s = runs["sftfast"]
        rc = med([r["run"]["cpu"] for r in b]) / med([r["run"]["cpu"] for r in s])
        rw = med([r["run"]["wall"] for r in b]) / med([r["run"]["wall"] for r in s])
        rp = med([r["process_cpu"] for r in b]) / med([r["process_cpu"] for r in s])
        lines.append(f"- **sftfast x baseline: {rc:.1f}x per CPU-second** (run), {rw:.1f}x "
                     f"wall, {rp:.1f}x whole-process CPU-s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cap-frac", type=float, default=0.1,
                    help="rebalance cap per category = round(cap_frac * rows)")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/bench_pipeline-data"))
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER,
                    help="a folder with tokenizer.json, or the file")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                    help="local-disk folder for each run's outputs (removed after the run)")
    ap.add_argument("--json", type=Path, help="also dump all results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    tok = args.tokenizer / "tokenizer.json" if args.tokenizer.is_dir() else args.tokenizer
    if not tok.is_file():
        sys.exit(f"bench_pipeline: skipped, no tokenizer at {tok} (the default needs ../shared "
                 f"beside the repository; pass --tokenizer)")
    t0 = time.perf_counter()
    data, meta = ensure_data(args.data_dir, args.rows, args.seed)
    print(f"data: {data} ({meta['bytes'] / 2**20:,.0f} MiB, {meta['rows']:,} rows; ready in "
          f"{time.perf_counter() - t0:.1f} s): {json.dumps(meta)}", flush=True)
    from sftfast.render import builtin_template

    cap = max(1, round(args.cap_frac * args.rows))
    base_spec = {"data": str(data), "tokenizer_json": str(tok.resolve()), "seed": args.seed,
                 "cap": cap, "bands": near_bands(), "template": builtin_template("chatml")}
    print(f"cap per category {cap:,}; near-dedup bands x rows {base_spec['bands']}", flush=True)
    runs: dict[str, list[dict]] = {t: [] for t in args.tools}
    missing = set()
    for rep in range(args.repeats):
        for tool in args.tools:
            if tool in missing:
                continue
            tmp = Path(tempfile.mkdtemp(prefix=f"bench_pipeline-{tool}-", dir=args.tmp))
            try:
                spec = dict(base_spec, tool=tool, work=str(tmp))
                res = measure(spec, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if res is None:
                print("sftfast: skipped, `sftfast.Pipeline` is not available in this build",
                      flush=True)
                missing.add(tool)
                continue
            if "failed" in res:
                missing.add(tool)
                continue
            runs[tool].append(res)
            print(f"[{rep + 1}/{args.repeats}] {tool}: run {res['run']['cpu']:.1f} CPU-s, "
                  f"{res['run']['wall']:.1f} s wall; "
                  + "; ".join(f"{s['name']} {s['cpu']:.1f}" for s in res["steps"]), flush=True)
    cmd = shlex.join([Path(sys.executable).name, *sys.argv])
    load = os.getloadavg()
    text = (f"`{cmd}` ({args.rows:,} rows, {args.repeats} repeat(s), medians; {versions()}; "
            f"{os.cpu_count()} CPUs, load {load[0]:.1f}/{load[1]:.1f} at the end)\n\n"
            + report(runs))
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"command": cmd, "rows": args.rows, "meta": meta,
                                         "spec": {k: v for k, v in base_spec.items()
                                                  if k != "template"},
                                         "versions": versions(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
