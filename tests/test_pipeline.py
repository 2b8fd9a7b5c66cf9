"""The pipeline: config files, row accounting, rejects, resume after kill -9, fingerprints."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sftfast
from sftfast.cli import main
from sftfast.demo import demo_config
from sftfast.steps import ExactDedup, LengthFilter, NearDedup, Read, Rebalance, Render, WriteShards

STEPS = ["read", "length_filter", "exact_dedup", "near_dedup", "rebalance", "render",
         "write_shards"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4,000-conversation demo config (inputs written once per module)."""
    folder = tmp_path_factory.mktemp("demo")
    cfg = demo_config(folder, 4000, seed=3)
    cfg.pop("output")
    return cfg


def digest(folder: Path) -> str:
    """Hash of every file's relative name and bytes under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_every_row_is_accounted_for(demo: dict[str, Any], tmp_path: Path) -> None:
    result = sftfast.Pipeline.from_config(demo).run(tmp_path, quiet=True, rejects=True)
    s = {st.name: st for st in result.steps}
    assert [st.name for st in result.steps] == STEPS
    for st in result.steps:
        assert st.rows_in + st.added == st.rows_out + sum(st.dropped.values()), st
        assert st.seconds >= 0 and st.cpu_seconds >= 0 and st.peak_rss_bytes > 10 << 20
    lines = (Path(demo["steps"][0]["read"]["paths"][0])).read_bytes().count(b"\n")
    assert s["read"].rows_in == lines
    for a, b in itertools.pairwise(STEPS[:5]):
        assert s[b].rows_in == s[a].rows_out, (a, b)
    assert s["render"].rows_in == s["rebalance"].rows_out - s["rebalance"].added
    assert s["write_shards"].rows_in == s["rebalance"].rows_out
    assert s["exact_dedup"].dropped["exact_duplicate"] > 50
    assert s["near_dedup"].dropped["near_duplicate"] > 10
    # Every read row ends in exactly one place: the shards (via samples.parquet) or rejects.
    rows = pl.read_parquet(tmp_path / "steps/00-read/rows.parquet")
    rejects = pl.read_parquet(result.rejects)
    samples = pl.read_parquet(tmp_path / "steps/06-write_shards/samples.parquet")
    in_shards = set(samples["sft_id"].to_list())
    rejected = rejects.filter(pl.col("sft_id").is_not_null())
    assert rejected["sft_id"].n_unique() == rejected.height
    assert in_shards.isdisjoint(rejected["sft_id"].to_list())
    assert in_shards | set(rejected["sft_id"].to_list()) == set(rows["sft_id"].to_list())
    by_step = rejects.group_by("step", "sft_drop_reason").len()
    for st in result.steps[:-1]:
        got = {r: n for step, r, n in by_step.iter_rows() if step == st.name}
        assert got == st.dropped, st.name
    # Rejected rows carry their data and reason.
    dup = rejects.filter(pl.col("sft_drop_reason") == "exact_duplicate").row(0, named=True)
    assert dup["messages"] and dup["source"].endswith("demo.jsonl")
    bad = rejects.filter(pl.col("step") == "read").row(0, named=True)
    assert bad["raw"] and bad["sft_row"] is not None
    # The shards hold what the render step made, each rebalance copy once.
    m = sftfast.read_manifest(result.shards, verify=True)
    assert m.samples == samples.height == s["write_shards"].rows_out
    assert m.config_fingerprint == result.steps[-1].fingerprint


def test_resume_is_byte_identical_and_detects_changes(demo: dict[str, Any],
                                                      tmp_path: Path) -> None:
    p = sftfast.Pipeline.from_config(demo)
    first = p.run(tmp_path, quiet=True)
    before = digest(tmp_path / "shards")
    again = p.run(tmp_path, quiet=True)
    assert all(st.resumed for st in again.steps)
    assert digest(tmp_path / "shards") == before
    assert "will resume" in p.plan(tmp_path)
    # A changed step is refused, then redone with force; the steps before it are kept.
    cfg = json.loads(json.dumps(demo))
    cfg["steps"][6]["write_shards"]["seq_len"] = 512
    changed = sftfast.Pipeline.from_config(cfg)
    assert "CHANGED" in changed.plan(tmp_path)
    with pytest.raises(sftfast.ConfigError, match="force"):
        changed.run(tmp_path, quiet=True)
    forced = changed.run(tmp_path, quiet=True, force=True)
    assert [st.resumed for st in forced.steps] == [True] * 6 + [False]
    assert sftfast.read_manifest(tmp_path / "shards").seq_len == 512
    assert forced.fingerprint != first.fingerprint
    # An input file that changed is detected too.
    src = Path(demo["steps"][0]["read"]["paths"][0])
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(sftfast.ConfigError, match="read"):
            changed.run(tmp_path, quiet=True)
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_kill_9_then_rerun_gives_the_same_shards(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "in", 60_000, seed=5)
    cfg.pop("output")
    conf = tmp_path / "sft.json"
    conf.write_text(json.dumps(cfg))
    clean = tmp_path / "clean"
    assert main(["prepare", str(conf), "--out", str(clean), "--quiet"]) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sftfast.cli", "prepare", str(conf), "--out", str(killed),
           "--quiet"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 120
    while not (killed / "steps" / "01-length_filter" / "stats.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "finished before the kill"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (killed / "steps").iterdir())
    assert "00-read" in done and "06-write_shards" not in done
    assert main(["prepare", str(conf), "--out", str(killed), "--quiet"]) == 0
    assert not [p for p in (killed / "steps").iterdir() if ".tmp-" in p.name]
    assert digest(killed / "shards") == digest(clean / "shards")


def test_same_shards_for_any_thread_count(demo: dict[str, Any], tmp_path: Path) -> None:
    threads = sftfast.get_num_threads()
    try:
        sftfast.set_num_threads(1)
        sftfast.Pipeline.from_config(demo).run(tmp_path / "one", quiet=True, report=False)
        sftfast.set_num_threads(2)
        sftfast.Pipeline.from_config(demo).run(tmp_path / "two", quiet=True, report=False)
    finally:
        sftfast.set_num_threads(threads)
    assert digest(tmp_path / "one" / "shards") == digest(tmp_path / "two" / "shards")
    for name in ("exact_dedup", "near_dedup", "rebalance"):
        i = STEPS.index(name)
        a = pl.read_parquet(tmp_path / "one" / f"steps/{i:02d}-{name}/dropped.parquet")
        b = pl.read_parquet(tmp_path / "two" / f"steps/{i:02d}-{name}/dropped.parquet")
        assert a.equals(b), name


def test_step_file_compression_changes_no_result(demo: dict[str, Any], tmp_path: Path) -> None:
    runs = {}
    for codec in ("none", "lz4"):
        cfg = {**demo, "compression": codec}
        runs[codec] = sftfast.Pipeline.from_config(cfg).run(tmp_path / codec, quiet=True,
                                                            report=False)
    assert digest(tmp_path / "none" / "shards") == digest(tmp_path / "lz4" / "shards")
    for name in ("length_filter", "exact_dedup", "near_dedup", "render"):
        i = STEPS.index(name)
        a = pl.read_parquet(tmp_path / "none" / f"steps/{i:02d}-{name}/dropped.parquet")
        b = pl.read_parquet(tmp_path / "lz4" / f"steps/{i:02d}-{name}/dropped.parquet")
        assert a.equals(b), name
    size = {c: (tmp_path / c / "steps/00-read/rows.parquet").stat().st_size for c in runs}
    assert size["lz4"] < 0.8 * size["none"], size
    # Not part of the fingerprints: another codec resumes the run.
    again = sftfast.Pipeline.from_config({**demo, "compression": "zstd"}).run(
        tmp_path / "lz4", quiet=True, report=False)
    assert all(st.resumed for st in again.steps)
    with pytest.raises(sftfast.ConfigError, match="compression: expected one of"):
        sftfast.Pipeline.from_config({**demo, "compression": "gzip"})


def test_yaml_toml_and_python_give_one_pipeline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"conversations": [{"from": "human", "value": f"Q{i % 5}?"},
                               {"from": "gpt", "value": "A reply."}], "topic": "x"}
            for i in range(20)]
    (data / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    yaml_text = """
tokenizer: demo
seed: 7
steps:
  - read: {paths: [data/a.jsonl]}
  - length_filter: {prompt: [1, 64], response: [1, 64], max_total: 128}
  - exact_dedup: {}
  - render: {template: chatml}
  - write_shards: {seq_len: 64}
"""
    toml_text = """
tokenizer = "demo"
seed = 7
[[steps]]
step = "read"
paths = ["data/a.jsonl"]
[[steps]]
step = "length_filter"
prompt = [1, 64]
response = [1, 64]
max_total = 128
[[steps]]
step = "exact_dedup"
[[steps]]
step = "render"
template = "chatml"
[[steps]]
step = "write_shards"
seq_len = 64
"""
    (tmp_path / "sft.yaml").write_text(yaml_text)
    (tmp_path / "sft.toml").write_text(toml_text)
    a = sftfast.Pipeline.from_config(tmp_path / "sft.yaml")
    b = sftfast.Pipeline.from_config(tmp_path / "sft.toml")
    c = sftfast.Pipeline([Read([str(data / "a.jsonl")]), LengthFilter(
        prompt=[1, 64], response=[1, 64], max_total=128), ExactDedup(),
        Render(template="chatml"), WriteShards(seq_len=64)], tokenizer="demo", seed=7)
    assert a.config() == b.config() == c.config()
    ra = a.run(tmp_path / "ra", quiet=True, report=False)
    rc = c.run(tmp_path / "rc", quiet=True, report=False)
    assert ra.fingerprint == rc.fingerprint
    assert [st.rows_out for st in ra.steps] == [20, 20, 5, 5, 5]


@pytest.mark.parametrize(("steps", "match"), [
    ([{"render": {}}], "first step must be 'read'"),
    ([{"read": {"paths": ["x"]}}, {"dedupe": {}}], "unknown step 'dedupe'"),
    ([{"read": {"paths": ["x"]}}, {"exact_dedup": {"colour": 1}}], "exact_dedup.*colour"),
    ([{"read": {"paths": ["x"]}}, {"render": {}}, {"exact_dedup": {}}],
     "'exact_dedup' must come before 'render'"),
    ([{"read": {"paths": ["x"]}}, {"write_shards": {"seq_len": 8}}], "needs a 'render'"),
    ([{"read": {"paths": ["x"]}}, {"length_filter": {"prompt": [9, 1]}}], "min 9 > max 1"),
])
def test_config_errors_name_the_step(steps: list[Any], match: str) -> None:
    with pytest.raises(sftfast.ConfigError, match=match):
        sftfast.Pipeline.from_config({"tokenizer": "demo", "steps": steps})


def test_config_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [read: {paths: [a]\n")
    with pytest.raises(sftfast.ConfigError, match="bad.yaml"):
        sftfast.Pipeline.from_config(bad)
    with pytest.raises(sftfast.ConfigError, match="unknown keys"):
        sftfast.Pipeline.from_config({"steps": [{"read": {"paths": "a"}}], "stepz": 1})


def test_prepare_dry_run_and_quiet(demo: dict[str, Any], tmp_path: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "sft.json"
    conf.write_text(json.dumps(demo))
    assert main(["prepare", str(conf), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capfd.readouterr().out
    assert "~4,300 rows" in out or "rows" in out
    for name in STEPS:
        assert name in out
    assert not (tmp_path / "run" / "steps").exists()
    assert main(["prepare", str(conf), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # quiet, and no progress bar when stderr is not a terminal
    assert main(["prepare", str(conf), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    assert capfd.readouterr().out.count("done, will resume") == len(STEPS)


def test_near_dedup_examples_and_histograms_reach_the_report(demo: dict[str, Any],
                                                             tmp_path: Path) -> None:
    result = sftfast.Pipeline.from_config(demo).run(tmp_path, quiet=True)
    stats = json.loads((tmp_path / "steps/03-near_dedup/stats.json").read_text())
    near = stats["report"]["near"]
    assert near["examples"] and all(len(e["texts"]) >= 2 for e in near["examples"])
    assert sum(int(k) * v for k, v in near["cluster_sizes"].items()) >= near["duplicates"]
    lengths = json.loads((tmp_path / "steps/01-length_filter/stats.json").read_text())
    series = lengths["report"]["lengths"]["series"]
    s = {st.name: st for st in result.steps}
    assert sum(series["before filter"]) == s["length_filter"].rows_in
    assert sum(series["after filter"]) == s["length_filter"].rows_out
    html = result.report.read_text() if result.report else ""
    for plot in ("steps", "lengths", "mix", "cluster-sizes", "s-curve", "row-fill"):
        assert f'data-plot="{plot}"' in html
    assert NearDedup(threshold=0.7).config() == {"near_dedup": {
        "text": "conversation", "threshold": 0.7, "num_perm": 128, "ngram": 5,
        "num_bands": None, "verify_threshold": None, "keep": "first", "score_column": None,
        "examples": 5}}
    assert Rebalance(category_column="c").config() == {"rebalance": {"category_column": "c"}}


def test_strict_read_stops_at_the_first_bad_row(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text('{"question": "Hi?", "answer": "Hello."}\n{"question": "Q?", "answer": ""}\n'
                   "{not json\n")
    steps = [Read(str(src), strict=True), Render(template="chatml")]
    with pytest.raises(sftfast.InputError, match=r"a\.jsonl: row 1: empty_assistant"):
        sftfast.Pipeline(steps, tokenizer="demo").run(tmp_path / "run", quiet=True)
    lenient = sftfast.Pipeline([Read(str(src)), Render(template="chatml")], tokenizer="demo")
    result = lenient.run(tmp_path / "run2", quiet=True, rejects=True, report=False)
    assert result.steps[0].dropped == {"empty_assistant": 1, "invalid_json": 1}
    rej = pl.read_parquet(result.rejects).sort("sft_row")
    assert rej["sft_row"].to_list() == [1, 2]
    assert rej["sft_drop_reason"].to_list() == ["empty_assistant", "invalid_json"]
    assert rej["raw"][0].startswith('{"question":"Q?"') and rej["sft_drop_detail"][1]


def rows_before_near_dedup(steps: Path) -> pl.DataFrame:
    """``sft_id``, ``sft_row`` and the conversation ``text`` of the rows the near-dedup step
    saw (read's kept rows minus the length filter's and exact dedup's drops)."""
    from sftfast._steputil import conversation_text

    gone = pl.concat([pl.read_parquet(steps / f"{d}/dropped.parquet")["sft_id"]
                      for d in ("01-length_filter", "02-exact_dedup")])
    rows = (pl.scan_parquet(steps / "00-read/rows.parquet")
            .filter(pl.col("sft_drop_reason").is_null(), ~pl.col("sft_id").is_in(gone.implode())))
    text = conversation_text(rows.collect_schema(), "conversation").alias("text")
    return rows.select("sft_id", "sft_row", text).collect()


def test_steps_read_in_batches_with_the_same_results(demo: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Near dedup and the shard writer read ``rows.parquet`` / ``rendered.arrow`` slice by
    slice (bounded memory); tiny slices must change nothing, and the near-dedup step must
    agree with :func:`sftfast.near_dedup` over the same rows."""
    import sftfast._steputil as su

    whole = sftfast.Pipeline.from_config(demo).run(tmp_path / "whole", quiet=True)
    monkeypatch.setattr(su, "BATCH_ROWS", 333)
    monkeypatch.setattr(su, "ROW_GROUP_ROWS", 111)
    small = sftfast.Pipeline.from_config(demo).run(tmp_path / "small", quiet=True)
    assert [s.dropped for s in small.steps] == [s.dropped for s in whole.steps]
    assert digest(small.shards) == digest(whole.shards)
    for step in STEPS[1:-1]:
        for name in ("dropped.parquet", "selection.parquet", "rendered.arrow"):
            a = tmp_path / "whole/steps" / f"{STEPS.index(step):02d}-{step}" / name
            if a.exists():
                b = tmp_path / "small" / a.relative_to(tmp_path / "whole")
                read = pl.read_ipc if name.endswith(".arrow") else pl.read_parquet
                assert read(a).equals(read(b)), (step, name)
    assert pl.read_parquet(tmp_path / "whole/steps/06-write_shards/samples.parquet").equals(
        pl.read_parquet(tmp_path / "small/steps/06-write_shards/samples.parquet"))
    # The rows alive before near dedup, through the public function.
    steps = tmp_path / "whole/steps"
    res = sftfast.near_dedup(rows_before_near_dedup(steps), "text", threshold=0.8,
                             seed=demo.get("seed", 0))
    want = res.frame.filter(pl.col("is_duplicate"))["sft_id"].sort()
    got = pl.read_parquet(steps / "03-near_dedup/dropped.parquet")["sft_id"].sort()
    assert got.len() > 10 and got.to_list() == want.to_list()
    # The report's cluster-size histogram, from every row's cluster.
    sizes = (res.frame.group_by("dup_cluster").len().filter(pl.col("len") > 1)
             .group_by("len").len("clusters"))
    near = json.loads((steps / "03-near_dedup/stats.json").read_text())["report"]["near"]
    assert near["cluster_sizes"] == {str(k): v for k, v in sorted(sizes.iter_rows())}
    assert sum((int(k) - 1) * v for k, v in near["cluster_sizes"].items()) == got.len()


def test_near_dedup_step_keeps_by_score_and_window_packing_in_batches(
        demo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``keep="score"`` reads the score along with the text, batch by batch; window packing
    takes the shard writer's batches as they come."""
    import sftfast._steputil as su

    cfg = json.loads(json.dumps(demo))
    for step in cfg["steps"]:
        if "near_dedup" in step:
            step["near_dedup"].update(keep="score", score_column="sft_row")
        if "write_shards" in step:
            step["write_shards"].update(packing="window", window=50)
    whole = sftfast.Pipeline.from_config(cfg).run(tmp_path / "whole", quiet=True)
    monkeypatch.setattr(su, "BATCH_ROWS", 257)
    monkeypatch.setattr(su, "ROW_GROUP_ROWS", 257)
    small = sftfast.Pipeline.from_config(cfg).run(tmp_path / "small", quiet=True)
    assert digest(small.shards) == digest(whole.shards)
    assert [s.dropped for s in small.steps] == [s.dropped for s in whole.steps]
    steps = tmp_path / "small/steps"
    res = sftfast.near_dedup(rows_before_near_dedup(steps), "text", threshold=0.8,
                             seed=cfg.get("seed", 0), keep="score", score_column="sft_row")
    want = res.frame.filter(pl.col("is_duplicate"))["sft_id"].sort().to_list()
    got = pl.read_parquet(steps / "03-near_dedup/dropped.parquet")["sft_id"].sort().to_list()
    assert len(got) > 10 and got == want
    m = sftfast.read_manifest(small.shards)
    assert m.packing.method == "window" and m.samples == small.steps[-1].rows_out
