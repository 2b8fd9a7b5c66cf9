"""The sftfast command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import sftfast
from sftfast.cli import main


def test_demo_runs_the_whole_pipeline_offline(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "demo"
    assert main(["demo", "--rows", "3000", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    for step in ("read", "length_filter", "exact_dedup", "near_dedup", "rebalance", "render",
                 "write_shards"):
        assert f"\n{step} " in out, step
    assert "exact_duplicate" in out and "packing efficiency" in out
    m = sftfast.read_manifest(run / "shards", verify=True)
    assert m.samples > 1000 and (run / "report.html").stat().st_size > 10_000
    assert main(["demo", "--rows", "3000", "--out", str(run)]) == 0
    assert capsys.readouterr().out.count("(resumed)") == 7


def test_filter_jsonl_with_a_broken_line(tmp_path: Path, tok_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    df = sftfast.demo_frame(500, seed=2)
    src = tmp_path / "data.jsonl"
    df.write_ndjson(src)
    with src.open("ab") as fh:
        fh.write(b'{"question": "unterminated\n')
        fh.write(b'{"question": "bad \xff byte", "answer": "x"}\n')
    out, rej = tmp_path / "kept.parquet", tmp_path / "rej.parquet"
    code = main(["filter", str(src), "--tokenizer", str(tok_path), "--field", "question:2:64",
                 "--field", "answer:4:", "--max-total", "1000", "--out", str(out),
                 "--rejects", str(rej), "--quiet"])
    assert code == 0
    kept, rejected = pl.read_parquet(out), pl.read_parquet(rej)
    assert kept.height + rejected.height == df.height + 2
    reasons = rejected["sft_drop_reason"].to_list()
    assert sum(r.startswith("invalid_json") for r in reasons) == 1
    assert sum(r == "invalid_utf8" for r in reasons) == 1
    assert set(kept.columns) == set(df.columns)

    code = main(["filter", str(src), "--tokenizer", str(tok_path), "--out", str(out), "--strict"])
    assert code == 2
    assert f"line {df.height + 1}" in capsys.readouterr().err


def test_filter_rejects_name_physical_lines(tmp_path: Path, tok_path: Path) -> None:
    """Rows after blank, broken and non-object lines keep their physical line in ``sft_row``,
    as the broken lines themselves do."""
    src = tmp_path / "data.jsonl"
    src.write_bytes(b'{"question": "what is two plus two", "answer": "four"}\n\n{"question": \n'
                    b'[1, 2]\n{"question": "what is one plus one", "answer": ""}\n')
    out, rej = tmp_path / "kept.parquet", tmp_path / "rej.parquet"
    assert main(["filter", str(src), "--tokenizer", str(tok_path), "--field", "question:1:",
                 "--field", "answer:1:", "--out", str(out), "--rejects", str(rej),
                 "--quiet"]) == 0
    rows = dict(pl.read_parquet(rej).select("sft_row", "sft_drop_reason").sort("sft_row")
                .iter_rows())
    assert set(rows) == {2, 3, 4}
    assert rows[2].startswith("invalid_json") and rows[3] == "not_an_object"
    assert rows[4].startswith("empty")
    assert pl.read_parquet(out).height == 1


def test_filter_parquet_csv_and_json_array(tmp_path: Path, tok_path: Path) -> None:
    df = sftfast.demo_frame(300, seed=4).drop("id")
    paths = [tmp_path / "a.parquet", tmp_path / "b.csv", tmp_path / "c.json"]
    df.write_parquet(paths[0])
    df.write_csv(paths[1])
    df.write_json(paths[2])
    out = tmp_path / "kept.parquet"
    assert main(["filter", *map(str, paths), "--tokenizer", str(tok_path), "--out", str(out),
                 "--quiet"]) == 0
    kept = pl.read_parquet(out)
    single = sftfast.length_filter(df, fields={"question": None, "answer": None},
                                   tokenizer=sftfast.load_tokenizer(tok_path))
    assert kept.height == 3 * single.kept.height


def test_entry_point_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "sftfast.cli", "filter", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--max-total" in proc.stdout


def test_rebalance_cli_writes_selection_and_plan(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    df = sftfast.demo_frame(2000, seed=3)
    src = tmp_path / "data.jsonl"
    df.write_ndjson(src)
    with src.open("ab") as fh:
        fh.write(b'{"question": "unterminated\n')
    out = tmp_path / "mix.parquet"
    code = main(["rebalance", str(src), "--category", "category", "--method", "unimax",
                 "--budget", "600", "--max-epochs", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "MixPlan(method='unimax'" in text and "1 unreadable lines set aside" in text
    got = pl.read_parquet(out)
    assert got.height == 600
    assert set(got.columns) == set(df.columns) | {"sft_repeat"}
    # Same command, same bytes of selection (rows chosen by keyed hash, not by file order).
    shuffled = tmp_path / "shuffled.jsonl"
    df.sample(fraction=1.0, shuffle=True, seed=9).write_ndjson(shuffled)
    out2 = tmp_path / "mix2.parquet"
    assert main(["rebalance", str(shuffled), "--category", "category", "--budget", "600",
                 "--max-epochs", "2", "--out", str(out2), "--quiet"]) == 0
    key = ["id", "sft_repeat"]
    assert pl.read_parquet(out2).sort(key).equals(got.sort(key))


def test_rebalance_cli_dry_run_and_errors(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "data.parquet"
    sftfast.demo_frame(300).write_parquet(src)
    assert main(["rebalance", str(src), "--category", "category", "--method", "weights",
                 "--weight", "code=2", "--dry-run"]) == 2
    assert "no value for categories" in capsys.readouterr().err
    assert main(["rebalance", str(src), "--category", "category", "--method", "cap",
                 "--cap", "20"]) == 0
    assert "target" in capsys.readouterr().out
    assert main(["rebalance", str(src), "--category", "category", "--method", "counts",
                 "--count", "code"]) == 2
    assert "expected CATEGORY=NUMBER" in capsys.readouterr().err
