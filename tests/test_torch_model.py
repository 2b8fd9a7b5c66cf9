"""Packed batches through a real model: a tiny random Llama (transformers, SDPA, CPU, float32).

* Padded layout with the block-diagonal bool mask: every sample's per-token losses (and logits)
  on a packed row equal those of the same sample run alone, within 1e-4.
* Flat layout: the same tokens, labels and positions as the padded layout without its padding,
  and ``cu_seq_lens`` at the sample boundaries.
* A few AdamW steps on packed batches clearly reduce the loss.

transformers hands a 4D mask to SDPA unchanged (``masking_utils._preprocess_mask_arguments``
returns it as-is), and ``torch.nn.functional.scaled_dot_product_attention`` reads a bool mask
as True = may attend: the loader's mask is used as given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the model tests need PyTorch (pip install 'sftfast[torch]')")
transformers = pytest.importorskip(
    "transformers", reason="the model tests need transformers (a tiny random Llama)")

import polars as pl
import sftfast
import torch.nn.functional as F
from sftfast.torch import loader

IGNORE = -100
VOCAB = 300
SEQ_LEN = 128
BATCH = 4
TOL = 1e-4
STEPS = 30


# -- data --------------------------------------------------------------------------------------
def make_samples(n: int = 40, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Samples of varied lengths (2 .. seq_len): a random prompt (labels −100) then a response.

    The response follows a fixed random successor table (next = succ[prev]), so the model has
    something to learn in the training test.
    """
    rng = np.random.default_rng(seed)
    succ = rng.permutation(VOCAB)
    fixed = [SEQ_LEN, SEQ_LEN - 1, SEQ_LEN - 3, 2, 3, 5]
    lengths = fixed + [int(x) for x in rng.integers(2, SEQ_LEN + 1, n - len(fixed))]
    out = []
    for n_tok in lengths:
        prompt = n_tok // 2
        ids = np.empty(n_tok, dtype=np.int64)
        ids[:max(prompt, 1)] = rng.integers(0, VOCAB, max(prompt, 1))
        for i in range(max(prompt, 1), n_tok):
            ids[i] = succ[ids[i - 1]]
        labels = ids.copy()
        labels[:prompt] = IGNORE
        out.append((ids, labels))
    return out


def row_table(path: Path) -> list[list[tuple[int, int]]]:
    """Global row → its pieces as (sample id, length), read from the .npy files in shard order."""
    manifest = sftfast.read_manifest(path)
    rows = []
    for shard in manifest.shards:
        d = path / shard.name
        so = np.load(d / "sample_offsets.npy")
        ro = np.load(d / "row_offsets.npy")
        sid = np.load(d / "sample_ids.npy")
        for r in range(len(ro) - 1):
            rows.append([(int(sid[i]), int(so[i + 1] - so[i])) for i in range(ro[r], ro[r + 1])])
    assert len(rows) == manifest.rows
    return rows


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matrices: one intra-op thread is as fast and steadier on a shared machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def samples() -> list[tuple[np.ndarray, np.ndarray]]:
    return make_samples()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory,
            samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("model") / "shards"
    df = pl.DataFrame({"input_ids": [s[0].tolist() for s in samples],
                       "labels": [s[1].tolist() for s in samples]},
                      schema={"input_ids": pl.List(pl.UInt32), "labels": pl.List(pl.Int32)})
    m = sftfast.write_shards(df, out, seq_len=SEQ_LEN, shard_tokens=1000, seed=7)
    assert m.samples == len(samples) and m.packing.truncated == 0 and m.packing.dropped == 0
    assert len(m.shards) > 1
    rows = row_table(out)
    assert sum(len(r) for r in rows) == len(samples)
    assert any(len(r) >= 3 for r in rows)  # rows that really pack several samples
    return out, rows


def tiny_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2 * SEQ_LEN,
        attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    assert model.config._attn_implementation == "sdpa"
    return model


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy with the causal shift: position t predicts labels[t + 1]; 0 where −100.

    ``[..., T]`` labels → ``[..., T - 1]`` losses.
    """
    lead = labels.shape[:-1]
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]),
                           labels[..., 1:].reshape(-1), ignore_index=IGNORE,
                           reduction="none").view(*lead, -1)


# -- tests -------------------------------------------------------------------------------------
def test_packed_row_losses_equal_single_sample_losses(
        dataset: tuple[Path, list], samples: list[tuple[np.ndarray, np.ndarray]]) -> None:
    path, rows = dataset
    model = tiny_llama().eval()
    ld = loader(path, batch_size=BATCH, layout="padded", shuffle=False, drop_last=False,
                attention_mask=True, pad_id=0)
    seen = 0
    worst_tok = worst_sum = worst_logit = 0.0
    with torch.no_grad():
        for k, batch in enumerate(ld):
            ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
            mask = batch["attention_mask"]
            b, length = ids.shape
            assert length == SEQ_LEN and mask.shape == (b, 1, SEQ_LEN, SEQ_LEN)
            assert mask.dtype == torch.bool
            assert batch.num_loss_tokens == int((labels != IGNORE).sum())
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
            tok = token_losses(out.logits, labels)
            row_sum = 0.0
            for r in range(b):
                pieces = rows[k * BATCH + r]
                expected_mask = torch.eye(SEQ_LEN, dtype=torch.bool)
                a = 0
                for sid, n in pieces:
                    s_ids, s_labels = samples[sid]
                    assert n == len(s_ids)
                    # what the loader put there: the sample, positions 0.., first label masked
                    want_labels = torch.from_numpy(s_labels).clone()
                    want_labels[0] = IGNORE
                    assert torch.equal(ids[r, a:a + n], torch.from_numpy(s_ids))
                    assert torch.equal(labels[r, a:a + n], want_labels)
                    assert torch.equal(pos[r, a:a + n], torch.arange(n))
                    expected_mask[a:a + n, a:a + n] = torch.ones(n, n, dtype=torch.bool).tril()

                    # the same sample alone: batch of one, no mask, default positions
                    alone = model(input_ids=torch.from_numpy(s_ids)[None], use_cache=False)
                    alone_tok = token_losses(alone.logits[0], want_labels)
                    packed_tok = tok[r, a:a + n - 1]
                    worst_tok = max(worst_tok, float((packed_tok - alone_tok).abs().max()))
                    worst_sum = max(worst_sum, abs(float(packed_tok.sum() - alone_tok.sum())))
                    worst_logit = max(worst_logit, float(
                        (out.logits[r, a:a + n] - alone.logits[0]).abs().max()))
                    # the last token predicts the next piece's first token (or padding): no loss
                    if a + n - 1 < SEQ_LEN - 1:
                        assert tok[r, a + n - 1] == 0
                    row_sum += float(packed_tok.double().sum())
                    a += n
                    seen += 1
                assert torch.equal(mask[r, 0], expected_mask)
                assert (labels[r, a:] == IGNORE).all()
            # no loss anywhere but inside the samples, and transformers' own loss agrees
            assert float(tok.double().sum()) == pytest.approx(row_sum, abs=TOL)
            hf = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels,
                       use_cache=False).loss
            assert float(hf) == pytest.approx(row_sum / batch.num_loss_tokens, abs=TOL)
            if k == 0:
                # control: a plain causal mask lets samples see their predecessors, and the
                # comparison notices (so the match above is the mask's doing)
                causal = torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).tril().expand_as(mask)
                leak = model(input_ids=ids, attention_mask=causal, position_ids=pos,
                             use_cache=False).logits
                inner_starts = torch.cat([pos[r, 1:] == 0 for r in range(b)]).nonzero().numel()
                assert inner_starts > 0
                assert float((leak - out.logits).abs().max()) > 1e-2
    assert seen == len(samples)
    assert worst_tok < TOL, worst_tok
    assert worst_sum < TOL, worst_sum
    assert worst_logit < TOL, worst_logit


def test_flat_layout_is_padded_layout_without_padding(dataset: tuple[Path, list]) -> None:
    path, rows = dataset
    kw = {"batch_size": BATCH, "shuffle": False, "drop_last": False}
    flat = list(loader(path, layout="flat", **kw))
    padded = list(loader(path, layout="padded", attention_mask=False, **kw))
    assert len(flat) == len(padded) > 1
    for k, (f, p) in enumerate(zip(flat, padded)):
        lens = [n for r in rows[k * BATCH:(k + 1) * BATCH] for _, n in r]
        fill = [sum(n for _, n in r) for r in rows[k * BATCH:(k + 1) * BATCH]]
        assert "attention_mask" not in f
        for key in ("input_ids", "labels", "position_ids"):
            want = torch.cat([p[key][r, :fill[r]] for r in range(len(fill))])[None]
            assert f[key].dtype == torch.int64 and f[key].shape == want.shape
            assert torch.equal(f[key], want), key
        cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32)
        for key in ("cu_seq_lens_q", "cu_seq_lens_k"):
            assert f[key].dtype == torch.int32
            assert torch.equal(f[key], cu)
        assert f["max_length_q"] == f["max_length_k"] == max(lens)
        # position_ids restart at 0 exactly at the boundaries
        starts = (f["position_ids"][0] == 0).nonzero().flatten()
        assert torch.equal(starts, cu[:-1].long())
        for attr in ("num_samples", "num_tokens", "num_loss_tokens"):
            assert getattr(f, attr) == getattr(p, attr), attr
        assert f.num_samples == len(lens) and f.num_tokens == sum(lens)


def test_flat_layout_through_sdpa_without_cache_matches_padded(
        dataset: tuple[Path, list]) -> None:
    """transformers 5 builds the packed mask from ``position_ids`` when given no mask and no
    cache (``use_cache=False``; with a cache it is plain causal across samples): the flat batch
    then gives the padded batch's logits on every real token."""
    path, rows = dataset
    model = tiny_llama().eval()
    kw = {"batch_size": BATCH, "shuffle": False, "drop_last": False}
    worst = 0.0
    with torch.no_grad():
        for k, (f, p) in enumerate(zip(loader(path, layout="flat", **kw),
                                       loader(path, layout="padded", **kw))):
            fill = [sum(n for _, n in r) for r in rows[k * BATCH:(k + 1) * BATCH]]
            lf = model(input_ids=f["input_ids"], position_ids=f["position_ids"],
                       use_cache=False).logits
            lp = model(input_ids=p["input_ids"], attention_mask=p["attention_mask"],
                       position_ids=p["position_ids"], use_cache=False).logits
            want = torch.cat([lp[r, :fill[r]] for r in range(len(fill))])[None]
            assert lf.shape == want.shape
            worst = max(worst, float((lf - want).abs().max()))
    assert worst < TOL, worst


def test_a_few_steps_reduce_the_loss(dataset: tuple[Path, list]) -> None:
    path, _ = dataset
    model = tiny_llama(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    eval_batch = next(iter(loader(path, batch_size=BATCH, layout="padded", shuffle=False)))

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(input_ids=eval_batch["input_ids"],
                               attention_mask=eval_batch["attention_mask"],
                               position_ids=eval_batch["position_ids"],
                               labels=eval_batch["labels"], use_cache=False).loss)

    before = eval_loss()
    ld = loader(path, batch_size=BATCH, layout="padded", shuffle=True, seed=3)
    losses: list[float] = []
    model.train()
    while len(losses) < STEPS:
        for batch in ld:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], labels=batch["labels"],
                        use_cache=False)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
            if len(losses) == STEPS:
                break
    after = eval_loss()
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert after < 0.5 * before, (before, after)
