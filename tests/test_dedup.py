"""sftfast.near_dedup / exact_dedup / minhash: found pairs against exact Jaccard, edge cases,
determinism, keep policies, bad input."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sftfast
from sftfast import ConfigError, SchemaError

ZH = ("今天天气很好，我们一起去公园散步吧。公园里有很多人在跑步和打太极拳，孩子们在草地上放风筝，"
      "老人们坐在长椅上聊天，湖边还有人在钓鱼。傍晚的时候，夕阳把湖面染成了金色，非常漂亮。")


def words(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(20_000)}" for _ in range(n)]


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Reference shingling: NFKC, lowercase, CJK chars and words as tokens."""
    import re
    import unicodedata

    cjk = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
    toks = re.findall(rf"[{cjk}]|[^\W{cjk}_]+", unicodedata.normalize("NFKC", text).lower())
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def edit(tokens: list[str], k: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(tokens)
    for _ in range(k):
        out[rng.randrange(len(out))] = f"x{rng.randrange(10**6)}"
    return out


def corpus() -> tuple[list[str], list[tuple[int, int]]]:
    """Originals plus edited copies; returns texts and the (original, copy) pairs."""
    texts, pairs = [], []
    for i in range(60):
        base = words(i, 150)
        texts.append(" ".join(base))
    for i in range(60):  # English copies with 0-2 edits (Jaccard >= ~0.87)
        pairs.append((i, len(texts)))
        texts.append(" ".join(edit(words(i, 150), i % 3, seed=i)))
    zh_base = [ZH[j:] + ZH[:j] for j in range(0, 60, 6)]
    for j, t in enumerate(zh_base):  # Chinese originals, exact-but-punctuation and 1-char edits
        pairs.append((len(texts), len(texts) + 1))
        texts += [t, t.replace("，", ",") + "。"]
    mixed = "GPU加速的训练 pipeline 可以把 tokenization 的时间从几个小时缩短到几分钟，" * 3
    pairs.append((len(texts), len(texts) + 1))
    texts += [mixed, mixed.replace("几分钟", "几十分钟")]
    return texts, pairs


def test_finds_near_duplicates_and_only_them() -> None:
    texts, pairs = corpus()
    res = sftfast.near_dedup(pl.DataFrame({"text": texts}), "text", threshold=0.8)
    cluster = res.cluster.to_list()
    for a, b in pairs:
        j = jaccard(texts[a], texts[b])
        if j >= 0.85:
            assert cluster[a] == cluster[b], (a, b, j)
    # No two unrelated originals are joined (their Jaccard is ~0).
    roots = {cluster[i] for i in range(60)}
    assert len(roots) == 60
    for i, c in enumerate(cluster):
        if c != i:
            assert jaccard(texts[c], texts[i]) >= 0.5, (c, i)
    assert res.stats.duplicates == int(res.frame["is_duplicate"].sum())
    assert res.stats.kept == res.keep.sum()


def test_exact_duplicates_empty_and_short_texts() -> None:
    df = pl.DataFrame({"text": ["same text here", "same text here", "", "", None, "!!!", "ok",
                                "ok", "Same  TEXT here!"]})
    res = sftfast.near_dedup(df)
    assert res.frame["dup_cluster"].to_list() == [0, 0, 2, 3, 4, 5, 6, 6, 0]
    assert res.stats.rows_without_tokens == 4
    ex = sftfast.exact_dedup(df, "text")
    # "!!!" folds to "" (punctuation folding), like the empty strings before it.
    assert ex.frame["is_duplicate"].to_list() == [False, True, False, True, False, True, False,
                                                  True, True]
    assert ex.duplicates == 5
    raw = sftfast.exact_dedup(df, "text", lowercase=False, fold_whitespace=False,
                              fold_punctuation=False)
    assert raw.frame["is_duplicate"].to_list()[-1] is False
    wide = sftfast.exact_dedup(df, "text", bits=128).frame
    assert wide["is_duplicate"].to_list() == ex.frame["is_duplicate"].to_list()


def test_giant_bucket_stays_linear() -> None:
    n = 200_000
    df = pl.DataFrame({"text": ["one template answer repeated everywhere"] * n})
    res = sftfast.near_dedup(df)
    assert res.stats.clusters == 1 and res.stats.duplicates == n - 1
    assert res.stats.largest_bucket == n
    assert res.stats.candidate_edges == (n - 1) * len(res.stats.rows_per_band)


def test_same_result_for_threads_batches_and_lazy_input(tmp_path) -> None:
    texts, _ = corpus()
    df = pl.DataFrame({"text": texts})
    ref = sftfast.near_dedup(df).cluster.to_list()
    assert sftfast.near_dedup(df, batch_rows=7).cluster.to_list() == ref
    assert sftfast.near_dedup(df, spill=True).cluster.to_list() == ref
    assert sftfast.near_dedup(df, spill=tmp_path / "spill").cluster.to_list() == ref
    assert list((tmp_path / "spill").iterdir()) == []
    lazy = sftfast.near_dedup(df.lazy(), batch_rows=13)
    assert lazy.cluster.to_list() == ref
    assert lazy.frame.collect()["dup_cluster"].to_list() == ref
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    code = ("import polars as pl, sftfast\n"
            f"r = sftfast.near_dedup(pl.read_parquet({str(path)!r}))\n"
            "print(r.cluster.to_list())\n")
    outs = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True, env=os.environ | {"SFTFAST_NUM_THREADS": t}).stdout
            for t in ("1", "2")}
    assert outs == {f"{ref}\n"}


def test_keep_policies() -> None:
    base = " ".join(words(1, 100))
    df = pl.DataFrame({"text": [base, base + " tail", base + " w1 w2"], "score": [1.0, 3.0, 2.0]})
    assert sftfast.near_dedup(df).keep.to_list() == [True, False, False]
    assert sftfast.near_dedup(df, keep="longest").keep.to_list() == [False, False, True]
    res = sftfast.near_dedup(df, keep="score", score_column="score")
    assert res.keep.to_list() == [False, True, False]
    assert res.frame["dup_representative"].to_list() == [1, 1, 1]
    assert res.sample_clusters(texts=df["text"])["size"].to_list() == [3]


def test_multiple_text_columns_and_verification() -> None:
    q = [" ".join(words(i, 40)) for i in range(20)]
    df = pl.DataFrame({"q": q + q, "a": [" ".join(words(100 + i, 40)) for i in range(40)]})
    # Prompts repeat but answers differ: duplicates on q alone, not on q + a.
    assert sftfast.near_dedup(df, "q").stats.duplicates == 20
    assert sftfast.near_dedup(df, ["q", "a"]).stats.duplicates == 0
    strict = sftfast.near_dedup(df, "q", verify_threshold=0.99)
    assert strict.stats.duplicates == 20 and strict.stats.edges_rejected == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="ab 加速,", max_size=30), min_size=1, max_size=40))
def test_dedup_is_idempotent_and_consistent(texts: list[str]) -> None:
    df = pl.DataFrame({"text": texts})
    res = sftfast.near_dedup(df, ngram=2)
    kept = res.frame.filter(~pl.col("is_duplicate")).select("text")
    again = sftfast.near_dedup(kept, ngram=2)
    assert again.stats.duplicates == 0  # idempotent: what is kept has no duplicates left
    cl = res.cluster.to_list()
    assert all(cl[c] == c and c <= i for i, c in enumerate(cl))  # roots are smallest rows


def test_minhash_plugin_estimates_jaccard() -> None:
    a = " ".join(words(5, 300))
    b = " ".join(words(5, 300)[:240] + words(6, 60))
    sig = pl.DataFrame({"t": [a, b, None]}).select(pl.col("t").sft.minhash(num_perm=256))["t"]
    x, y = sig[0].to_list(), sig[1].to_list()
    est = sum(u == v for u, v in zip(x, y)) / 256
    assert abs(est - jaccard(a, b)) < 0.1
    assert sig[2] is None
    assert pl.select(sftfast.minhash(pl.lit(a), seed=2**64 - 1)).item().len() == 128


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(threshold=1.0), ConfigError, "threshold"),
        (dict(num_perm=0), ConfigError, "num_perm"),
        (dict(num_bands=999), ConfigError, "num_bands"),
        (dict(keep="best"), ConfigError, "keep"),
        (dict(keep="score"), ConfigError, "score_column"),
        (dict(text_column="nope"), SchemaError, "nope"),
        (dict(text_column="n"), SchemaError, "strings"),
        (dict(seed=-1), ConfigError, "seed"),
    ],
)
def test_bad_parameters(kwargs: dict, error: type, match: str) -> None:
    df = pl.DataFrame({"text": ["a b c"], "n": [1]})
    with pytest.raises(error, match=match):
        sftfast.near_dedup(df, **({"text_column": "text"} | kwargs))


def test_exact_key_namespace_hashes_the_expression() -> None:
    df = pl.DataFrame({"a": ["xa", "qa"]})
    keys = df.select(pl.col("a").str.replace("x", "q").sft.exact_key())["a"]
    assert keys[0] == keys[1]


def test_a_finished_run_cannot_be_reused() -> None:
    state = sftfast._native.NearDedup()
    state.add(pl.Series(["a b c"]))
    state.finish()
    with pytest.raises(ConfigError, match="finished"):
        state.finish()
    with pytest.raises(ConfigError, match="finished"):
        state.add(pl.Series(["x"]))
