"""Shard writing and reading: every kept token exactly once, read back with plain numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sftfast
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sftfast import ConfigError, SchemaError, ShardError


def make_frame(lengths: list[int]) -> pl.DataFrame:
    """Sample i holds ids i*10000 + j; its first half is a prompt (label −100)."""
    ids = [[i * 10_000 + j for j in range(n)] for i, n in enumerate(lengths)]
    labels = [[-100 if j < n // 2 else i * 10_000 + j for j in range(n)]
              for i, n in enumerate(lengths)]
    return pl.DataFrame({"input_ids": ids, "labels": labels},
                        schema={"input_ids": pl.List(pl.Int64), "labels": pl.List(pl.Int64)})


def read_back(out: Path) -> tuple[dict, list[list[tuple[int, np.ndarray, np.ndarray]]]]:
    """Rows as lists of (sample id, tokens, labels), read with numpy only."""
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        d = out / shard["name"]
        ids = np.load(d / "input_ids.npy", mmap_mode="r")
        labels = np.load(d / "labels.npy", mmap_mode="r")
        so = np.load(d / "sample_offsets.npy")
        ro = np.load(d / "row_offsets.npy")
        sid = np.load(d / "sample_ids.npy")
        assert ids.dtype == np.uint32 and labels.dtype == np.int32
        assert so.dtype == ro.dtype == sid.dtype == np.uint64
        assert len(ids) == shard["tokens"] and len(ro) == shard["rows"] + 1
        for r in range(len(ro) - 1):
            rows.append([(int(sid[i]), np.asarray(ids[so[i]:so[i + 1]]),
                          np.asarray(labels[so[i]:so[i + 1]]))
                         for i in range(ro[r], ro[r + 1])])
    return manifest, rows


def expected_pieces(n: int, seq_len: int, overlong: str) -> list[tuple[int, int]]:
    if n == 0:
        return []
    if n <= seq_len:
        return [(0, n)]
    if overlong == "drop":
        return []
    if overlong == "truncate_right":
        return [(0, seq_len)]
    if overlong == "truncate_left":
        return [(n - seq_len, n)]
    return [(a, min(a + seq_len, n)) for a in range(0, n, seq_len)]


def check(out: Path, lengths: list[int], seq_len: int, overlong: str) -> dict:
    manifest, rows = read_back(out)
    got: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        assert 0 < sum(len(t) for _, t, _ in row) <= seq_len
        for sid, toks, labels in row:
            start = int(toks[0]) - sid * 10_000
            np.testing.assert_array_equal(toks, sid * 10_000 + start + np.arange(len(toks)))
            n = lengths[sid]
            want_labels = np.where(np.arange(start, start + len(toks)) < n // 2, -100,
                                   toks.astype(np.int64))
            np.testing.assert_array_equal(labels, want_labels)
            got.setdefault(sid, []).append((start, start + len(toks)))
    for i, n in enumerate(lengths):
        assert sorted(got.get(i, [])) == expected_pieces(n, seq_len, overlong), i
    kept = sum(b - a for i, n in enumerate(lengths) for a, b in expected_pieces(n, seq_len,
                                                                                  overlong))
    assert manifest["tokens"] == kept
    assert manifest["rows"] == len(rows)
    p = manifest["packing"]
    assert p["input_samples"] == len(lengths)
    assert p["tokens_lost"] == sum(lengths) - kept
    return manifest


LENGTHS = [int(x) for x in np.random.default_rng(1).lognormal(np.log(60), 0.9, 600).clip(0, 700)]


@pytest.mark.parametrize("packing", ["bfd", "window"])
@pytest.mark.parametrize("overlong", ["drop", "truncate_right", "truncate_left", "split"])
def test_round_trip_every_kept_token_once(tmp_path: Path, packing: str, overlong: str) -> None:
    m = sftfast.write_shards(make_frame(LENGTHS), tmp_path, seq_len=256, packing=packing,
                             window=64, overlong=overlong, shard_tokens=5000)
    assert len(m.shards) > 2
    check(tmp_path, LENGTHS, 256, overlong)
    assert sftfast.read_manifest(tmp_path, verify=True) == m
    assert m.packing.efficiency > 0.95


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 90), max_size=60), seq_len=st.integers(1, 64),
       overlong=st.sampled_from(["drop", "truncate_right", "truncate_left", "split"]),
       packing=st.sampled_from(["bfd", "window"]), cap=st.sampled_from([None, 1, 3]))
def test_property_rows_fit_and_tokens_placed_once(tmp_path_factory: pytest.TempPathFactory,
                                                  lengths: list[int], seq_len: int,
                                                  overlong: str, packing: str,
                                                  cap: int | None) -> None:
    out = tmp_path_factory.mktemp("prop")
    sftfast.write_shards(make_frame(lengths), out, seq_len=seq_len, packing=packing, window=7,
                         overlong=overlong, max_per_row=cap, shard_tokens=50)
    check(out, lengths, seq_len, overlong)
    if cap is not None:
        assert all(len(r) <= cap for r in read_back(out)[1])


def test_deterministic_across_threads_batches_and_lazy(tmp_path: Path) -> None:
    df = make_frame(LENGTHS)
    runs = []
    batches = df.iter_slices(41)  # an iterable of DataFrames: the caller's own batches
    for i, (threads, frame, batch) in enumerate([(1, df, 65_536), (2, df, 37),
                                                 (2, df.lazy(), 100), (1, batches, 1)]):
        sftfast.set_num_threads(threads)
        try:
            m = sftfast.write_shards(frame, tmp_path / str(i), seq_len=300, shard_tokens=3000,
                                     batch_rows=batch)
        finally:
            sftfast.set_num_threads(0)
        runs.append([s.files for s in m.shards])
    assert runs[0] == runs[1] == runs[2] == runs[3]
    other = sftfast.write_shards(df, tmp_path / "seed", seq_len=300, shard_tokens=3000, seed=9)
    assert [s.files for s in other.shards] != runs[0]


def test_labels_none_learns_every_token_and_nulls_are_dropped(tmp_path: Path) -> None:
    df = pl.DataFrame({"input_ids": [[1, 2, 3], None, [], [4]]})
    m = sftfast.write_shards(df, tmp_path, seq_len=4, labels=None)
    assert (m.packing.input_samples, m.packing.dropped, m.tokens, m.loss_tokens) == (4, 2, 4, 4)
    labels = np.load(tmp_path / "shard-00000" / "labels.npy")
    ids = np.load(tmp_path / "shard-00000" / "input_ids.npy")
    np.testing.assert_array_equal(labels, ids.astype(np.int32))


def test_bad_input_is_named(tmp_path: Path) -> None:
    df = make_frame([3, 4])
    with pytest.raises(SchemaError, match="labels=None"):
        sftfast.write_shards(df.drop("labels"), tmp_path / "a", seq_len=8)
    with pytest.raises(SchemaError, match="labels=None"):
        sftfast.write_shards(iter([df, df.drop("labels")]), tmp_path / "a2", seq_len=8)
    # A bad first batch is refused before overwrite clears an existing dataset.
    kept = sftfast.write_shards(df, tmp_path / "a3", seq_len=8)
    with pytest.raises(SchemaError, match="labels=None"):
        sftfast.write_shards(iter([df.drop("labels")]), tmp_path / "a3", seq_len=8,
                             overwrite=True)
    with pytest.raises(SchemaError, match="got batches of dict"):
        sftfast.write_shards([{"input_ids": [1]}], tmp_path / "a3", seq_len=8,
                             overwrite=True)  # type: ignore[list-item]
    assert sftfast.read_manifest(tmp_path / "a3", verify=True).samples == kept.samples
    bad = df.with_columns(pl.Series("labels", [[1, 2], [1, 2, 3, 4]]))
    with pytest.raises(SchemaError, match="row 0 of the batch: labels has 2 values, input_ids 3"):
        sftfast.write_shards(bad, tmp_path / "b", seq_len=8)
    neg = pl.DataFrame({"input_ids": [[1, -2]]})
    with pytest.raises(SchemaError, match="input_ids"):
        sftfast.write_shards(neg, tmp_path / "c", seq_len=8, labels=None)
    with pytest.raises(SchemaError, match="list of token ids"):
        sftfast.write_shards(pl.DataFrame({"input_ids": ["x"]}), tmp_path / "d", seq_len=8,
                             labels=None)
    for kw in ({"seq_len": 0}, {"seq_len": 8, "packing": "ffd"},
               {"seq_len": 8, "overlong": "cut"}, {"seq_len": 8, "max_per_row": 0}):
        with pytest.raises(ConfigError):
            sftfast.write_shards(df, tmp_path / "e", **kw)  # type: ignore[arg-type]


def test_overwrite_and_unfinished_or_corrupt_datasets(tmp_path: Path) -> None:
    df = make_frame(LENGTHS[:50])
    sftfast.write_shards(df, tmp_path, seq_len=128, shard_tokens=500)
    with pytest.raises(ConfigError, match="overwrite=True"):
        sftfast.write_shards(df, tmp_path, seq_len=128)
    m = sftfast.write_shards(df, tmp_path, seq_len=64, overwrite=True)
    assert len(m.shards) == 1 and not (tmp_path / "shard-00001").exists()
    assert not list(tmp_path.glob(".sftfast-store-*"))
    # A flipped byte is caught by the checksum; a truncated file by its size.
    labels = tmp_path / "shard-00000" / "labels.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    sftfast.read_manifest(tmp_path)
    with pytest.raises(ShardError, match="checksum"):
        sftfast.read_manifest(tmp_path, verify=True)
    labels.write_bytes(bytes(data[:-4]))
    with pytest.raises(ShardError, match="truncated"):
        sftfast.read_manifest(tmp_path)
    # Without a manifest (a crash before the end) the folder is not a dataset.
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ShardError, match="no manifest.json"):
        sftfast.read_manifest(tmp_path)


def test_manifest_records_tokenizer_and_fingerprint(tmp_path: Path) -> None:
    tok = sftfast.demo_tokenizer()
    m = sftfast.write_shards(make_frame([5, 6]), tmp_path, seq_len=16, tokenizer=tok,
                             config_fingerprint="abc")
    assert m.tokenizer_hash == tok.key and m.config_fingerprint == "abc"
    assert m.format == "sftfast-shards" and m.version == 1 and m.seq_len == 16


def test_export_parquet_matches_shards(tmp_path: Path) -> None:
    sftfast.write_shards(make_frame(LENGTHS[:200]), tmp_path / "s", seq_len=256,
                         shard_tokens=4000)
    files = sftfast.export_parquet(tmp_path / "s", tmp_path / "pq", rows_per_file=20)
    assert len(files) > 1
    df = pl.concat([pl.read_parquet(f) for f in files])
    _, rows = read_back(tmp_path / "s")
    assert df.height == len(rows)
    for got, row in zip(df.iter_rows(named=True), rows, strict=True):
        assert got["input_ids"] == np.concatenate([t for _, t, _ in row]).tolist()
        assert got["labels"] == np.concatenate([lab for _, _, lab in row]).tolist()
        assert got["seq_lens"] == [len(t) for _, t, _ in row]
        assert got["sample_ids"] == [s for s, _, _ in row]
