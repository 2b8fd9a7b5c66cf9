"""The streaming loader: sharding across ranks and workers, epochs, exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sftfast
from sftfast import ConfigError

torch = pytest.importorskip("torch", reason="the loader tests need torch (the test extra)")
from sftfast.torch import PackedDataset, loader  # noqa: E402

LENGTHS = [int(x) for x in np.random.default_rng(5).lognormal(np.log(40), 0.8, 700).clip(1, 200)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample i holds ids i*1000 + j, so a piece names its sample by its first token."""
    out = tmp_path_factory.mktemp("shards")
    ids = [[i * 1000 + j for j in range(n)] for i, n in enumerate(LENGTHS)]
    sftfast.write_shards(pl.DataFrame({"input_ids": ids}), out, seq_len=128, labels=None,
                         shard_tokens=2000)
    return out


def pieces(batch: dict) -> list[int]:
    """First token of each sample piece in a flat batch."""
    cu = batch["cu_seq_lens_q"].tolist()
    ids = batch["input_ids"][0]
    return [int(ids[a]) for a in cu[:-1]]


def run(shards: Path, **kw: object) -> list[list[int]]:
    return [pieces(b) for b in loader(shards, **kw)]  # type: ignore[arg-type]


def all_pieces(shards: Path) -> list[int]:
    return sorted(p for b in run(shards, batch_size=1, shuffle=False) for p in b)


def test_ranks_and_workers_cover_every_row_once(shards: Path) -> None:
    everything = all_pieces(shards)
    rows = loader(shards).dataset.num_rows
    for world in (1, 2, 3):
        seen: list[int] = []
        batches = None
        for rank in range(world):
            per_worker = [run(shards, batch_size=2, rank=rank, world_size=world, num_workers=w,
                              seed=3) for w in (0, 1, 2)]
            assert per_worker[0] == per_worker[1] == per_worker[2]
            batches = len(per_worker[0]) if batches is None else batches
            assert len(per_worker[0]) == batches == rows // (2 * world)
            seen += [p for b in per_worker[0] for p in b]
        assert len(seen) == len(set(seen))
        assert set(seen) <= set(everything)
        dropped = rows % (2 * world)
        ds = PackedDataset(shards, batch_size=2, world_size=world, rank=0)
        assert ds.rows_dropped_per_epoch == dropped
        if dropped == 0:
            assert sorted(seen) == everything


def test_no_drop_last_reads_everything(shards: Path) -> None:
    got = sorted(p for b in run(shards, batch_size=3, drop_last=False) for p in b)
    assert got == all_pieces(shards)


def test_epochs_shuffle_deterministically(shards: Path) -> None:
    ld = loader(shards, batch_size=2, seed=1)
    e0 = [pieces(b) for b in ld]
    e1 = [pieces(b) for b in ld]
    assert ld.epoch == 2 and e0 != e1
    assert run(shards, batch_size=2, seed=1) == e0
    assert run(shards, batch_size=2, seed=2) != e0
    flat0 = sorted(p for b in e0 for p in b)
    assert flat0 == sorted(p for b in e1 for p in b)


RESUME = """
import json, sys
from sftfast.torch import loader
path, state, workers, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ld = loader(path, batch_size=2, seed=4, num_workers=workers)
if state:
    ld.load_state_dict(state)
out = []
for b in ld:
    cu = b["cu_seq_lens_q"].tolist()
    out.append([int(b["input_ids"][0][a]) for a in cu[:-1]])
    if len(out) == n:
        break
print(json.dumps({"batches": out, "state": ld.state_dict()}))
"""


def child(shards: Path, state: dict | None, workers: int, n: int) -> dict:
    r = subprocess.run([sys.executable, "-c", RESUME, str(shards), json.dumps(state or {}),
                        str(workers), str(n)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_resume_in_a_fresh_process_with_another_worker_count(shards: Path) -> None:
    full = run(shards, batch_size=2, seed=4)
    first = child(shards, None, 2, 5)
    assert first["batches"] == full[:5]
    assert first["state"] == {"version": 1, "seed": 4, "epoch": 0, "position": 10}
    for workers in (0, 1):
        rest = child(shards, first["state"], workers, 4)
        assert rest["batches"] == full[5:9]
    # Across an epoch boundary: the state moves to the next epoch at position 0.
    ld = loader(shards, batch_size=2, seed=4)
    for _ in ld:
        pass
    assert ld.state_dict()["epoch"] == 1 and ld.state_dict()["position"] == 0
    next_epoch = child(shards, ld.state_dict(), 0, 3)["batches"]
    assert next_epoch == [pieces(b) for b in ld][:3]


# torchdata 0.11 touches a torch attribute that torch 2.15 deprecates.
@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
def test_resume_with_torchdata_stateful_dataloader(shards: Path) -> None:
    pytest.importorskip("torchdata", reason="torchdata is optional")
    full = run(shards, batch_size=2, seed=4)
    ld = loader(shards, batch_size=2, seed=4, num_workers=2, stateful=True)
    it = iter(ld.dataloader)
    got = [pieces(next(it)) for _ in range(5)]
    state = ld.dataloader.state_dict()
    del it
    ld2 = loader(shards, batch_size=2, seed=4, num_workers=2, stateful=True)
    ld2.dataloader.load_state_dict(state)
    rest = [pieces(b) for b in ld2.dataloader][:4]
    assert got == full[:5] and rest == full[5:9]


def test_batches_report_true_counts(shards: Path) -> None:
    for b in loader(shards, batch_size=3, layout="padded", attention_mask=False, pad_id=-1):
        assert b["input_ids"].shape == (3, 128) and "attention_mask" not in b
        assert b.num_tokens == int((b["input_ids"] != -1).sum())
        assert b.num_samples == int((b["position_ids"] == 0).sum()) - int(
            ((b["input_ids"] == -1) & (b["position_ids"] == 0)).sum())
        assert b.num_loss_tokens == int((b["labels"] != -100).sum())
    b = next(iter(loader(shards, batch_size=3)))
    assert b.num_tokens == b["input_ids"].shape[1]
    assert b.num_samples == len(b["cu_seq_lens_q"]) - 1
    assert b["max_length_q"] == int(torch.diff(b["cu_seq_lens_q"]).max())


def test_bad_options(shards: Path) -> None:
    with pytest.raises(ConfigError):
        PackedDataset(shards, layout="ragged")
    with pytest.raises(ConfigError):
        PackedDataset(shards, batch_size=0)
    with pytest.raises(ConfigError):
        PackedDataset(shards, rank=2, world_size=2)
    ds = PackedDataset(shards, seed=1)
    with pytest.raises(ConfigError, match="seed"):
        ds.load_state_dict({"version": 1, "seed": 2, "epoch": 0, "position": 0})


def test_additive_mask_matches_the_boolean_one(shards: Path) -> None:
    b = next(iter(loader(shards, batch_size=2, layout="padded", shuffle=False)))
    a = next(iter(loader(shards, batch_size=2, layout="padded", shuffle=False,
                         mask_format="additive")))
    assert a["attention_mask"].dtype == torch.float32
    want = torch.where(b["attention_mask"], 0.0, torch.finfo(torch.float32).min)
    assert torch.equal(a["attention_mask"], want)
    with pytest.raises(ConfigError):
        PackedDataset(shards, mask_format="int")
