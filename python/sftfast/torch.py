"""Stream packed shards into a PyTorch training loop (needs ``torch``: ``pip install sftfast[torch]``).

``PackedDataset`` is an ``IterableDataset`` that yields ready batches; ``loader(...)`` wraps it in
a ``DataLoader`` and keeps the resume state. Collation (gathering rows, positions, masks) runs in
Rust over memory-mapped shards; Python only slices the epoch order and wraps buffers as tensors.

Order and sharding
    The epoch order is a pure function of ``(seed, epoch)``: shards in a seeded order, rows
    shuffled within consecutive windows of ``shuffle_window`` rows. From a position ``P`` (rows
    consumed by all ranks this epoch) the stream is cut into global batches of
    ``batch_size * world_size`` rows; rank ``r`` takes its ``batch_size`` slice of each, and
    DataLoader worker ``w`` of ``W`` takes the global batches ``g`` with ``g % W == w``. The
    DataLoader's round-robin over workers then yields them in order, so the batches a rank sees
    do not depend on the worker count, no two ranks or workers share a row, and none is skipped
    (with ``drop_last``, the tail that does not fill a global batch is left out and counted in
    ``rows_dropped_per_epoch``).

Resume
    ``state_dict()`` is ``{"seed", "epoch", "position"}``; loading it into a fresh loader (any
    worker count) continues with exactly the batches that would have come next.

Layouts
    ``"flat"`` (TRL/transformers padding-free): ``input_ids``, ``labels``, ``position_ids`` of
    shape ``[1, T]`` int64, ``cu_seq_lens_q/k`` int32, ``max_length_q/k`` ints; no attention
    mask. ``"padded"``: ``[B, seq_len]`` rows with ``position_ids`` and a block-diagonal causal
    ``attention_mask`` of shape ``[B, 1, L, L]`` (bool) for attention without variable-length
    support (``mask_format="bool"``, True = may attend, what SDPA and flex attention take;
    ``"additive"``: float32, 0 or the dtype's minimum, for eager attention). With the flat
    layout call transformers models with ``use_cache=False``: without a cache they build the
    block-diagonal mask from ``position_ids``, with one (the default) samples see each other
    under SDPA. In both, labels are −100 on each sample's first token and on unlearned tokens.
    Every batch carries ``num_samples``, ``num_tokens`` and ``num_loss_tokens`` as attributes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "sftfast.torch needs PyTorch: pip install 'sftfast[torch]'") from e

import numpy as np

from sftfast import _native
from sftfast.exceptions import ConfigError

__all__ = ["PackedBatch", "PackedDataset", "PackedLoader", "loader"]

LAYOUTS = ("flat", "padded")
MASK_FORMATS = ("bool", "additive")
STATE_VERSION = 1


class PackedBatch(dict):  # type: ignore[type-arg]
    """A batch (a plain ``dict`` of tensors for the model) with its true counts as attributes."""

    num_samples: int
    num_tokens: int
    num_loss_tokens: int


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_READERS: dict[tuple[int, str], Any] = {}


def _reader(path: str, verify: bool) -> Any:
    # One reader per process: mmaps are cheap, and a forked worker opens its own.
    key = (os.getpid(), path)
    if key not in _READERS:
        _READERS[key] = _native.ShardReader(path, verify=verify)
    return _READERS[key]


def _i64(buf: bytearray) -> torch.Tensor:
    return torch.frombuffer(buf, dtype=torch.int64) if buf else torch.zeros(0, dtype=torch.int64)


class PackedDataset(IterableDataset):  # type: ignore[type-arg]
    """Batches of packed rows from a shard folder written by ``sftfast.write_shards``.

    Parameters
    ----------
    path
        The dataset folder (with ``manifest.json``).
    batch_size
        Packed rows per batch and rank (the flat layout concatenates them into ``[1, T]``).
    layout
        ``"flat"`` or ``"padded"`` (see the module notes).
    seed, shuffle, shuffle_window
        The epoch order; ``shuffle=False`` reads rows in shard order.
    drop_last
        Leave out the tail that does not fill a global batch (needed with several ranks).
    rank, world_size
        Default: ``torch.distributed`` when initialised, else ``RANK``/``WORLD_SIZE``.
    pad_id, attention_mask, mask_format
        Padded layout only: the padding id, whether to build the ``[B, 1, L, L]`` mask, and
        its form: ``"bool"`` (SDPA, flex) or ``"additive"`` (float32, for eager attention).
    verify
        Check every file's checksum when opening.
    """

    def __init__(self, path: str | os.PathLike[str], *, batch_size: int = 1,
                 layout: str = "flat", seed: int = 0, shuffle: bool = True,
                 shuffle_window: int = 4096, drop_last: bool = True, rank: int | None = None,
                 world_size: int | None = None, pad_id: int = 0, attention_mask: bool = True,
                 mask_format: str = "bool", verify: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
        if mask_format not in MASK_FORMATS:
            raise ConfigError(f"mask_format: expected one of {MASK_FORMATS}, got "
                              f"{mask_format!r}")
        for name, v, lo in (("batch_size", batch_size, 1), ("shuffle_window", shuffle_window, 1),
                            ("seed", seed, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name}: expected an int >= {lo}, got {v!r}")
        r, w = _dist()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank: expected 0 <= rank < world_size ({self.world_size}), "
                              f"got {self.rank}")
        self.path = os.fspath(path)
        self.batch_size = batch_size
        self.layout = layout
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_window = shuffle_window
        self.drop_last = drop_last
        self.pad_id = pad_id
        self.attention_mask = attention_mask
        self.mask_format = mask_format
        self.verify = verify
        reader = _reader(self.path, verify)
        self.num_rows: int = reader.num_rows
        self.epoch = 0
        self.position = 0
        self._worker_done: int | None = None

    # -- order -----------------------------------------------------------------------------
    @property
    def rows_per_step(self) -> int:
        """Rows consumed by all ranks per step."""
        return self.batch_size * self.world_size

    def _steps_from(self, position: int) -> int:
        left = max(self.num_rows - position, 0)
        if self.drop_last:
            return left // self.rows_per_step
        return -(-left // self.rows_per_step)

    def __len__(self) -> int:
        """Batches this rank yields from the current position to the end of the epoch."""
        return self._steps_from(self.position)

    @property
    def rows_dropped_per_epoch(self) -> int:
        return self.num_rows % self.rows_per_step if self.drop_last else 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch = epoch
        self.position = 0
        self._worker_done = None

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: a pure function of (seed, epoch, rows consumed)."""
        info = get_worker_info()
        state = {"version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch,
                 "position": self.position}
        if info is not None:  # torchdata's StatefulDataLoader asks each worker
            state.update(worker=info.id, num_workers=info.num_workers,
                         worker_done=self._worker_done or 0)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"state: expected version {STATE_VERSION}, got "
                              f"{state.get('version')!r}")
        if state["seed"] != self.seed:
            raise ConfigError(f"state: saved with seed {state['seed']}, this dataset has seed "
                              f"{self.seed}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        info = get_worker_info()
        same = info is not None and state.get("num_workers") == info.num_workers
        self._worker_done = int(state.get("worker_done", 0)) if same else None

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PackedBatch]:
        reader = _reader(self.path, self.verify)
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        order = np.frombuffer(
            reader.epoch_order(self.seed, self.epoch, self.shuffle, self.shuffle_window),
            dtype="<u8")
        start = self.position
        steps = self._steps_from(start)
        skip = self._worker_done or 0
        for k, g in enumerate(range(wid, steps, nw)):
            if k < skip:
                continue
            a = start + g * self.rows_per_step + self.rank * self.batch_size
            rows = order[a:min(a + self.batch_size, self.num_rows)]
            if rows.size == 0:
                continue
            batch = self._collate(reader, rows.tobytes())
            self._worker_done = k + 1
            if info is None:
                self.position = start + (g + 1) * self.rows_per_step
            yield batch
        if info is None:
            self.set_epoch(self.epoch + 1)

    def _collate(self, reader: Any, rows: bytes) -> PackedBatch:
        out = PackedBatch()
        if self.layout == "flat":
            ids, labels, pos, cu, max_len, samples, loss = reader.collate_flat(rows)
            out["input_ids"] = _i64(ids).view(1, -1)
            out["labels"] = _i64(labels).view(1, -1)
            out["position_ids"] = _i64(pos).view(1, -1)
            cu_t = torch.frombuffer(cu, dtype=torch.int32)
            out["cu_seq_lens_q"] = cu_t
            out["cu_seq_lens_k"] = cu_t
            out["max_length_q"] = int(max_len)
            out["max_length_k"] = int(max_len)
            tokens = out["input_ids"].shape[1]
        else:
            ids, labels, pos, mask, samples, tokens, loss = reader.collate_padded(
                rows, self.pad_id, self.attention_mask)
            n = len(rows) // 8
            out["input_ids"] = _i64(ids).view(n, -1)
            out["labels"] = _i64(labels).view(n, -1)
            out["position_ids"] = _i64(pos).view(n, -1)
            if mask is not None:
                length = out["input_ids"].shape[1]
                m = torch.frombuffer(mask, dtype=torch.bool).view(n, 1, length, length)
                if self.mask_format == "additive":
                    m = torch.zeros(m.shape, dtype=torch.float32).masked_fill_(
                        ~m, torch.finfo(torch.float32).min)
                out["attention_mask"] = m
        out.num_samples = int(samples)
        out.num_tokens = int(tokens)
        out.num_loss_tokens = int(loss)
        return out


class PackedLoader:
    """A ``DataLoader`` over a ``PackedDataset`` that tracks the resume position."""

    def __init__(self, dataset: PackedDataset, dataloader: Any) -> None:
        self.dataset = dataset
        self.dataloader = dataloader
        self.epoch = dataset.epoch
        self.position = dataset.position

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "seed": self.dataset.seed, "epoch": self.epoch,
                "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.epoch, self.position = self.dataset.epoch, self.dataset.position

    def __iter__(self) -> Iterator[PackedBatch]:
        self.dataset.epoch, self.dataset.position = self.epoch, self.position
        self.dataset._worker_done = None
        step = self.dataset.rows_per_step
        for batch in self.dataloader:
            self.position += step
            yield batch
        self.set_epoch(self.epoch + 1)


def loader(path: str | os.PathLike[str], *, batch_size: int = 1, layout: str = "flat",
           num_workers: int = 0, seed: int = 0, shuffle: bool = True,
           shuffle_window: int = 4096, drop_last: bool = True, rank: int | None = None,
           world_size: int | None = None, pin_memory: bool = False, pad_id: int = 0,
           attention_mask: bool = True, mask_format: str = "bool", stateful: bool = False,
           prefetch_factor: int | None = None) -> PackedLoader:
    """A ready loader over the shards in ``path``; see ``PackedDataset`` for the options.

    ``stateful=True`` uses torchdata's ``StatefulDataLoader`` (same worker count to resume its
    own state); the returned loader's own ``state_dict`` resumes under any worker count.
    """
    ds = PackedDataset(path, batch_size=batch_size, layout=layout, seed=seed, shuffle=shuffle,
                       shuffle_window=shuffle_window, drop_last=drop_last, rank=rank,
                       world_size=world_size, pad_id=pad_id, attention_mask=attention_mask,
                       mask_format=mask_format)
    kw: dict[str, Any] = {"batch_size": None, "num_workers": num_workers,
                          "pin_memory": pin_memory}
    if num_workers > 0 and prefetch_factor is not None:
        kw["prefetch_factor"] = prefetch_factor
    if stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return PackedLoader(ds, StatefulDataLoader(ds, **kw))
    return PackedLoader(ds, DataLoader(ds, **kw))
