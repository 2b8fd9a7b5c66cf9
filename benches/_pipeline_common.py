"""Helpers of `bench_pipeline.py`: the synthetic data set and the per-step meter.

Data: OpenAI-`messages` JSONL, one conversation per line,
`{"messages": [{"role": ..., "content": ...}, ...], "category": ...}`, built with polars
expressions and numpy randomness (no Python loop over rows) from `sftfast.demo_frame(n, seed)`
(English and Chinese, log-normal lengths, skewed categories, ~0.5% null and ~0.5% empty
answers), plus:
  - a system prompt on ~15% of rows (6 per language),
  - ~2% multi-turn conversations (1-2 more user/assistant pairs taken from other rows),
  - ~1% overlong rows: the answer replaced by 25-55 KB of other answers of the same language
    joined (~4,500-10,000 tokens with the Qwen2 tokenizer, 0.18 tokens per byte),
  - ~3% exact duplicates: copies of random rows, a third unchanged, a third with the question
    and answer upper-cased, a third with every space doubled and extra leading/trailing
    whitespace (all equal after NFKC + lowercase + whitespace folding),
  - ~5% near duplicates: clusters of 2-5 rows (a seed row and 1-4 variants), each variant with
    1-3 edits to its answer (insert one word / two CJK characters at a word boundary, or delete
    the next word / two characters), and a quarter of them with one edit to the question too,
then shuffled with a seeded permutation. Cached as `<data-dir>/rows<N>-seed<S>-v<V>.jsonl`
with a `.meta.json` beside it (what was injected, bytes, generation time).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from pathlib import Path

from _benchutil import reset_peak_rss

DATA_VERSION = 1
EXACT_FRAC, NEAR_FRAC, MULTI_FRAC, OVERLONG_FRAC, SYSTEM_FRAC = 0.03, 0.05, 0.02, 0.01, 0.15
OVERLONG_BYTES = (25_000, 55_000)

SYSTEM_EN = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in at most three sentences.",
    "You are an expert tutor. Explain your reasoning step by step.",
    "You are a careful data analyst. State your assumptions.",
    "You are a friendly customer support agent.",
    "You are a senior software engineer reviewing code.",
]
SYSTEM_ZH = [
    "你是一个乐于助人的助手。",
    "你是一个简洁的助手，请用三句话以内回答。",
    "你是一位专业老师，请一步一步解释。",
    "你是一位细心的数据分析师，请说明你的假设。",
    "你是一位友好的客服人员。",
    "你是一位资深软件工程师，正在审查代码。",
]
EDIT_WORDS_EN = ["really", "quite", "perhaps", "indeed", "also", "still", "often", "simply",
                 "mostly", "clearly", "nearly", "rather", "surely", "usually", "maybe", "then"]
EDIT_CHARS_ZH = ["非常", "可能", "确实", "也许", "通常", "简单", "主要", "显然", "几乎", "已经",
                 "还是", "然后", "大概", "一定", "特别", "总是"]


# ----------------------------------------------------------------------------- data
def data_path(data_dir: Path, rows: int, seed: int) -> Path:
    return data_dir / f"rows{rows}-seed{seed}-v{DATA_VERSION}.jsonl"


def ensure_data(data_dir: Path, rows: int, seed: int) -> tuple[Path, dict]:
    """The cached JSONL for (rows, seed), generated first if missing; and its metadata."""
    path = data_path(data_dir, rows, seed)
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df, meta = make_frame(rows, seed)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    df.select("messages", "category").write_ndjson(tmp)
    os.replace(tmp, path)
    meta.update(rows=df.height, bytes=path.stat().st_size, seed=seed, version=DATA_VERSION,
                generate_s=round(time.perf_counter() - t0, 2))
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta


def _edit(pl, col: str, rand_pos, rand_op, rand_word, lang_en):
    """One edit of string column `col` at a random boundary: insert a word (English) or two
    characters (Chinese), or delete the next word / two characters. Vectorised."""
    s = pl.col(col)
    n = s.str.len_chars()
    p = (rand_pos * n).floor().cast(pl.Int64)
    # English: move p to the next space (byte offset == char offset: the demo's English is
    # ASCII; a non-ASCII row only gets a slightly different edit); none left: the end.
    nxt = s.str.slice(p).str.find(" ", literal=True)
    p = pl.when(lang_en).then(pl.when(nxt.is_null()).then(n).otherwise(p + nxt)).otherwise(p)
    head, tail = s.str.slice(0, p), s.str.slice(p)
    ins_en = pl.concat_str([head, pl.lit(" "), rand_word, tail])
    ins_zh = pl.concat_str([head, rand_word, tail])
    # Delete: English drops " word" after p; Chinese drops two characters.
    tail_en = tail.str.replace(r"^ +[^ ]+", "")
    del_en = pl.concat_str([head, tail_en])
    del_zh = pl.concat_str([head, tail.str.slice(2)])
    return (pl.when(lang_en & (rand_op < 0.6)).then(ins_en)
            .when(lang_en).then(del_en)
            .when(rand_op < 0.6).then(ins_zh)
            .otherwise(del_zh)).alias(col)


def make_frame(rows: int, seed: int):
    """The synthetic conversations (columns messages, category) and what was injected."""
    import numpy as np
    import polars as pl
    import sftfast

    rng = np.random.default_rng([seed, DATA_VERSION])
    n_exact = round(EXACT_FRAC * rows)
    n_near = round(NEAR_FRAC * rows)
    n = rows - n_exact - n_near
    base = sftfast.demo_frame(n, seed=seed).select(
        "category", "lang", pl.col("question").alias("q1"), pl.col("answer").alias("a1"))
    lang = base["lang"].to_numpy()
    is_en = lang == "en"

    # System prompts.
    has_sys = rng.random(n) < SYSTEM_FRAC
    k = rng.integers(0, len(SYSTEM_EN), n)
    sys_txt = np.where(is_en, np.asarray(SYSTEM_EN, dtype=object)[k],
                       np.asarray(SYSTEM_ZH, dtype=object)[k])
    sys_col = pl.Series("sys", sys_txt, dtype=pl.String).zip_with(
        pl.Series(has_sys), pl.Series("sys", [None] * n, dtype=pl.String))

    # Overlong answers: other answers of the same language joined.
    answers = base["a1"]
    a_bytes = answers.str.len_bytes().fill_null(0).to_numpy()
    n_over = round(OVERLONG_FRAC * rows)
    over = np.sort(rng.choice(n, n_over, replace=False))
    target = rng.uniform(*OVERLONG_BYTES, n_over)
    pieces_row, pieces_src = [], []
    for want_en in (True, False):
        pool = np.flatnonzero((is_en == want_en) & (a_bytes > 0))
        rows_l = over[is_en[over] == want_en]
        if not len(rows_l) or not len(pool):
            continue
        mean_b = a_bytes[pool].mean()
        cnt = np.maximum(1, np.ceil(target[np.searchsorted(over, rows_l)] / mean_b)).astype(int)
        pieces_row.append(np.repeat(rows_l, cnt))
        pieces_src.append(rng.choice(pool, cnt.sum()))
    src = np.concatenate(pieces_src)
    long = (pl.DataFrame({"row": np.concatenate(pieces_row), "a": answers.gather(src)})
            .group_by("row", maintain_order=True).agg(pl.col("a").str.join("\n\n")))
    a1 = answers.scatter(long["row"].to_numpy(), long["a"])

    # Multi-turn: one or two more (question, answer) pairs from other rows.
    mt = rng.random(n) < MULTI_FRAC
    two = mt & (rng.random(n) < 0.4)
    src2, src3 = rng.integers(0, n, n), rng.integers(0, n, n)
    q, a = base["q1"], base["a1"].fill_null("")
    null_s = pl.Series([None] * n, dtype=pl.String)
    conv = base.select("category", "lang", "q1").with_columns(
        sys=sys_col, a1=a1,
        q2=q.gather(src2).zip_with(pl.Series(mt), null_s),
        a2=a.gather(src2).zip_with(pl.Series(mt), null_s),
        q3=q.gather(src3).zip_with(pl.Series(two), null_s),
        a3=a.gather(src3).zip_with(pl.Series(two), null_s))

    # Exact duplicates: copies with case / whitespace changes.
    ex_src = rng.integers(0, n, n_exact)
    ex_kind = rng.integers(0, 3, n_exact)
    exact = conv[ex_src].with_columns(kind=pl.Series(ex_kind)).with_columns(
        [pl.when(pl.col("kind") == 1).then(pl.col(c).str.to_uppercase())
         .when(pl.col("kind") == 2)
         .then(pl.concat_str([pl.lit("  "), pl.col(c).str.replace_all(" ", "  ", literal=True),
                              pl.lit(" \n")]))
         .otherwise(pl.col(c)).alias(c) for c in ("q1", "a1")]).drop("kind")

    # Near duplicates: clusters of 2-5 (seed + 1-4 variants), 1-3 edits per variant.
    sizes = rng.integers(2, 6, max(1, n_near // 2))
    variants = np.repeat(np.arange(len(sizes)), sizes - 1)[:n_near]
    seeds = rng.choice(n, len(sizes), replace=False)
    near = conv[seeds[variants]]
    m = near.height
    near = near.with_columns(
        en=pl.col("lang") == "en",
        nedit=1 + (pl.col("a1").str.len_chars().fill_null(0) > 600).cast(pl.Int32)
        + (pl.col("a1").str.len_chars().fill_null(0) > 1500).cast(pl.Int32),
        qedit=pl.Series(rng.random(m) < 0.25))
    for j in range(3):
        w = rng.integers(0, len(EDIT_WORDS_EN), m)
        word = np.where(near["en"].to_numpy(), np.asarray(EDIT_WORDS_EN, dtype=object)[w],
                        np.asarray(EDIT_CHARS_ZH, dtype=object)[w])
        near = near.with_columns(rp=pl.Series(rng.random(m)), ro=pl.Series(rng.random(m)),
                                 rw=pl.Series(word, dtype=pl.String))
        e = _edit(pl, "a1", pl.col("rp"), pl.col("ro"), pl.col("rw"), pl.col("en"))
        near = near.with_columns(pl.when(pl.col("nedit") > j).then(e).otherwise(pl.col("a1"))
                                 .alias("a1"))
        if j == 0:
            e = _edit(pl, "q1", pl.col("rp"), pl.col("ro"), pl.col("rw"), pl.col("en"))
            near = near.with_columns(pl.when(pl.col("qedit")).then(e).otherwise(pl.col("q1"))
                                     .alias("q1"))
    near = near.select(conv.columns)

    allr = pl.concat([conv, exact, near])
    allr = allr[rng.permutation(allr.height)]

    def msg(role: str, col: str, when: pl.Expr | None = None) -> pl.Expr:
        one = pl.concat_list(pl.struct(role=pl.lit(role), content=pl.col(col)))
        if when is None:
            return one
        return pl.when(when).then(one).otherwise(
            pl.lit([], dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))))

    df = allr.select(
        messages=pl.concat_list(
            msg("system", "sys", pl.col("sys").is_not_null()), msg("user", "q1"),
            msg("assistant", "a1"), msg("user", "q2", pl.col("q2").is_not_null()),
            msg("assistant", "a2", pl.col("q2").is_not_null()),
            msg("user", "q3", pl.col("q3").is_not_null()),
            msg("assistant", "a3", pl.col("q3").is_not_null())),
        category=pl.col("category"))
    meta = {"base_rows": n, "exact_copies": n_exact, "near_variants": len(variants),
            "near_clusters": len(np.unique(variants)), "overlong_rows": n_over,
            "multi_turn_rows": int(mt.sum()), "system_rows": int(has_sys.sum()),
            "null_answers": int(base["a1"].null_count()),
            "empty_answers": int((base["a1"] == "").sum())}
    return df, meta


# ----------------------------------------------------------------------------- meter
def cpu_now() -> float:
    """CPU seconds of this process (all threads) plus its reaped children."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Meter:
    """Per-step CPU-s (self + children), wall-s, peak RSS (this process, reset per step) and
    the rows in/out each step reports."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    @contextlib.contextmanager
    def step(self, name: str, rows_in: int | None = None):
        import gc

        gc.collect()
        rec: dict = {"name": name, "rows_in": rows_in, "rows_out": None, "dropped": {}}
        reset_peak_rss()
        c0, w0 = cpu_now(), time.perf_counter()
        yield rec
        rec["cpu"] = cpu_now() - c0
        rec["wall"] = time.perf_counter() - w0
        rec["peak_rss_mb"] = vm_hwm_mb()
        self.steps.append(rec)
