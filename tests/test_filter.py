"""length_filter, the sft namespace and the plugin expressions."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sftfast


def test_reasons_and_accounting(tok: sftfast.Tokenizer) -> None:
    df = pl.DataFrame(
        {
            "question": ["What is 2+2?", "", None, "short", "Explain. " * 300, "ok?"],
            "answer": ["4", "x", "y", None, "fine", "yes " * 50],
        }
    )
    res = sftfast.length_filter(
        df, fields={"question": (1, 100), "answer": (1, 40)}, max_total=4096, tokenizer=tok
    )
    assert res.stats.dropped == {
        "empty:question": 1,
        "null:question": 1,
        "null:answer": 1,
        "too_long:question": 1,
        "too_long:answer": 1,
    }
    assert res.kept.columns == ["question", "answer"]
    assert res.kept["question"].to_list() == ["What is 2+2?"]
    assert res.rejected["sft_row"].to_list() == [1, 2, 3, 4, 5]
    assert res.stats.rows_in == res.stats.rows_kept + sum(res.stats.dropped.values()) == 6


def test_total_bound_and_exact_counts(tok: sftfast.Tokenizer) -> None:
    df = pl.DataFrame({"q": ["alpha beta gamma"] * 3, "a": ["one", "one two three four", "x"]})
    counts = df.select(
        pl.col("q").sft.token_count(tok).alias("nq"), pl.col("a").sft.token_count(tok).alias("na")
    )
    totals = (counts["nq"] + counts["na"]).to_list()
    limit = sorted(totals)[1]
    res = sftfast.length_filter(df, fields={"q": None, "a": None}, max_total=limit, tokenizer=tok)
    assert res.kept.height == sum(t <= limit for t in totals)
    assert res.stats.dropped.get("too_long:total", 0) == sum(t > limit for t in totals)


def test_lazyframe_input_and_streaming_engine(tok: sftfast.Tokenizer, tmp_path: Path) -> None:
    df = sftfast.demo_frame(3000, seed=3)
    src = tmp_path / "in.jsonl"
    df.write_ndjson(src)
    out = tmp_path / "out.parquet"
    (
        pl.scan_ndjson(src)
        .with_columns(pl.col("answer").sft.token_count(tok).alias("n"))
        .filter(pl.col("n") <= 200)
        .sink_parquet(out, engine="streaming")
    )
    eager = df.with_columns(pl.col("answer").sft.token_count(tok).alias("n")).filter(
        pl.col("n") <= 200
    )
    assert pl.read_parquet(out).equals(eager)
    lazy_res = sftfast.length_filter(df.lazy(), fields={"answer": (1, 200)}, tokenizer=tok)
    assert lazy_res.kept.height == eager.filter(pl.col("answer").str.strip_chars() != "").height


def test_bad_input_errors_name_the_column(tok: sftfast.Tokenizer) -> None:
    df = pl.DataFrame({"q": ["a"], "n": [1]})
    with pytest.raises(sftfast.SchemaError, match="'missing'"):
        sftfast.length_filter(df, fields={"missing": (1, 2)}, tokenizer=tok)
    with pytest.raises(sftfast.SchemaError, match="'n'"):
        sftfast.length_filter(df, fields={"n": (1, 2)}, tokenizer=tok)
    with pytest.raises(sftfast.ConfigError, match="min"):
        sftfast.length_filter(df, fields={"q": (5, 2)}, tokenizer=tok)
    with pytest.raises(ValueError):
        sftfast.length_filter(df, fields={}, tokenizer=tok)
    with pytest.raises(sftfast.TokenizerError):
        sftfast.load_tokenizer(12)


def test_invalid_utf8_and_huge_rows_are_counted_not_fatal(tok: sftfast.Tokenizer) -> None:
    df = pl.DataFrame({"a": [b"fine text", b"\xff\xfe broken", b"y" * 10_000_000]})
    res = sftfast.length_filter(df, fields={"a": (1, 4096)}, tokenizer=tok)
    assert res.stats.dropped == {"invalid_utf8:a": 1, "too_long:a": 1}
    assert res.kept.height == 1


def test_same_result_for_any_thread_count(tok: sftfast.Tokenizer) -> None:
    df = sftfast.demo_frame(5000, seed=9)
    results = []
    for n in (1, 2, 3):
        sftfast.set_num_threads(n)
        res = sftfast.length_filter(df, fields={"question": (2, 40), "answer": (4, 300)}, tokenizer=tok)
        results.append((res.rejected, sftfast.count_tokens(df["answer"], tok)))
    sftfast.set_num_threads(0)
    for rej, counts in results[1:]:
        assert rej.equals(results[0][0])
        assert counts.equals(results[0][1])


def _count_in_child(args: tuple[str, list[str]]) -> list[int | None]:
    path, texts = args
    return sftfast.count_tokens(texts, sftfast.load_tokenizer(path)).to_list()


def test_counts_in_forked_workers(tok_path: Path) -> None:
    texts = sftfast.demo_frame(200, seed=1)["question"].to_list()
    parent = _count_in_child((str(tok_path), texts))  # builds the pool before forking
    with mp.get_context("fork").Pool(2) as pool:
        children = pool.map(_count_in_child, [(str(tok_path), texts)] * 2)
    assert children == [parent, parent]


def test_exception_hierarchy() -> None:
    assert issubclass(sftfast.ConfigError, ValueError)
    assert issubclass(sftfast.FileError, OSError)
    assert issubclass(sftfast.ShardError, OSError)
    for exc in (sftfast.ConfigError, sftfast.SchemaError, sftfast.TokenizerError):
        assert issubclass(exc, sftfast.SftfastError)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.one_of(st.none(), st.text(max_size=200)), min_size=1, max_size=40),
    lo=st.integers(0, 20),
    span=st.integers(0, 60),
)
def test_kept_rows_satisfy_bounds(rows: list[str | None], lo: int, span: int) -> None:
    tok = sftfast.demo_tokenizer()
    df = pl.DataFrame({"t": rows}, schema={"t": pl.String})
    res = sftfast.length_filter(df, fields={"t": (lo, lo + span)}, max_total=None, tokenizer=tok)
    counts = sftfast.count_tokens(res.kept["t"], tok).to_list()
    assert all(c is not None and lo <= c <= lo + span for c in counts)
    assert res.stats.rows_in == df.height
    dropped_rows = res.rejected["sft_row"].to_list()
    assert sorted(dropped_rows) == dropped_rows
