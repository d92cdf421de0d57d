"""Batches from a dataset folder, as the reference's PuzzleDataset makes them, but resumable.

Train: the run is cut into chunks of `epochs_per_chunk` epochs (the reference's eval interval).
A chunk's group order is the concatenation of one random permutation of the groups per epoch. For
each group in order, one of its puzzles is picked at random and all of that puzzle's examples are
appended (shuffled, cut at the batch's remaining room); the last partial batch of a chunk is
dropped. Every rank builds the same global batch and keeps its own slice.

Seeding: the order comes from Philox(seed, chunk, 0) and is rebuilt on resume; the picks come from
Philox(seed, chunk, 1), whose state is part of `state_dict()`. No global RNG is touched.

Test: every example once, in order, in global batches; the last one padded (pad inputs, ignored
labels, the blank puzzle id) and marked by `valid`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch

from trm.data.format import IGNORE_LABEL, Split


@dataclass
class Batch:
    inputs: torch.Tensor  # (B_local, L) int32
    labels: torch.Tensor  # (B_local, L) int64, IGNORE_LABEL where unsupervised
    puzzle_identifiers: torch.Tensor  # (B_local,) int32
    valid: torch.Tensor  # (B_local,) bool; False for test padding

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"inputs": self.inputs, "labels": self.labels, "puzzle_identifiers": self.puzzle_identifiers}

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            *(t.to(device, non_blocking=nb) for t in (self.inputs, self.labels, self.puzzle_identifiers, self.valid))
        )


def valid_prefix(batch: Batch) -> Batch:
    """The batch without its trailing padding slots (a test batch pads only at its end, on every rank),
    keeping at least one slot so that shapes stay non-empty: each padding slot would cost a full forward
    pass and count for nothing. Needs the count on the host: one sync per batch."""
    n = max(int(batch.valid.sum()), 1)
    if n == batch.valid.shape[0] or not bool(batch.valid[: int(batch.valid.sum())].all()):
        return batch
    return type(batch)(*(getattr(batch, f.name)[:n] for f in fields(batch)))


def _philox(seed: int, chunk: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, chunk, stream])))


def _check_sharding(global_batch_size: int, rank: int, world_size: int) -> int:
    if global_batch_size % world_size:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the world size {world_size}")
    return global_batch_size // world_size


class _Gather:
    """Turns example indices into a rank's tensors (reads only the rank's rows of the memory map)."""

    def __init__(self, split: Split, rank: int, local_batch: int) -> None:
        self.split = split
        self.rank, self.local = rank, local_batch
        ign = split.meta.ignore_label_id
        self.ignore = None if ign is None else int(ign)
        # puzzle index of each example, for the identifiers
        self.example_puzzle = np.repeat(np.arange(len(split.puzzle_identifiers)), np.diff(split.puzzle_indices))

    def __call__(self, examples: np.ndarray, valid: np.ndarray | None = None) -> Batch:
        sl = slice(self.rank * self.local, (self.rank + 1) * self.local)
        ex = examples[sl]
        inputs = np.asarray(self.split.inputs[ex], dtype=np.int32)
        labels = np.asarray(self.split.labels[ex], dtype=np.int64)
        if self.ignore is not None:
            labels[labels == self.ignore] = IGNORE_LABEL
        ids = np.asarray(self.split.puzzle_identifiers[self.example_puzzle[ex]], dtype=np.int32)
        v = np.ones(len(ex), dtype=bool) if valid is None else valid[sl]
        if not v.all():
            inputs[~v] = self.split.meta.pad_id
            labels[~v] = IGNORE_LABEL
            ids[~v] = self.split.meta.blank_identifier_id
        return Batch(torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(ids), torch.from_numpy(v))


class TrainIterator:
    # Philox streams of the group order and of the puzzle/example picks (a subclass takes its own, so two
    # views of one dataset never share draws).
    ORDER_STREAM, PICK_STREAM = 0, 1

    def __init__(
        self,
        split: Split,
        global_batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        epochs_per_chunk: int,
        max_groups: int = 0,
    ) -> None:
        self.split = split
        self.B = global_batch_size
        self.gather = _Gather(split, rank, _check_sharding(global_batch_size, rank, world_size))
        self.seed = seed
        self.epochs_per_chunk = epochs_per_chunk
        gi = split.group_indices
        self.num_groups = split.num_groups if max_groups <= 0 else min(max_groups, split.num_groups)
        self.group_start = gi[:-1].astype(np.int64)
        self.group_size = np.diff(gi).astype(np.int64)
        self.puzzle_indices = split.puzzle_indices.astype(np.int64)
        self.single_example = bool(np.all(np.diff(self.puzzle_indices) == 1))
        self.chunk = 0
        self.cursor = 0  # position in the chunk's group order
        self._order: np.ndarray | None = None
        self._pick = _philox(seed, 0, self.PICK_STREAM)

    # -- bookkeeping -------------------------------------------------------------------------------
    def examples_per_epoch(self) -> float:
        return self.num_groups * float(self.split.meta.mean_puzzle_examples)

    def epoch(self) -> float:
        return self.chunk * self.epochs_per_chunk + self.cursor / max(1, self.num_groups)

    def _chunk_order(self) -> np.ndarray:
        if self._order is None:
            rng = _philox(self.seed, self.chunk, self.ORDER_STREAM)
            self._order = np.concatenate([rng.permutation(self.num_groups) for _ in range(self.epochs_per_chunk)])
        return self._order

    def state_dict(self) -> dict:
        return {"chunk": self.chunk, "cursor": self.cursor, "pick": self._pick.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.chunk, self.cursor = int(state["chunk"]), int(state["cursor"])
        self._order = None
        self._pick = _philox(self.seed, self.chunk, self.PICK_STREAM)
        self._pick.bit_generator.state = state["pick"]

    # -- batches -----------------------------------------------------------------------------------
    def _next_examples(self) -> np.ndarray | None:
        order = self._chunk_order()
        if self.single_example:
            if self.cursor + self.B > len(order):
                return None
            groups = order[self.cursor : self.cursor + self.B]
            self.cursor += self.B
            puzzles = self.group_start[groups] + (self._pick.random(self.B) * self.group_size[groups]).astype(np.int64)
            return self.puzzle_indices[puzzles]
        out: list[np.ndarray] = []
        room = self.B
        while room > 0:
            if self.cursor >= len(order):
                return None  # drop the chunk's last partial batch
            g = order[self.cursor]
            self.cursor += 1
            p = self.group_start[g] + self._pick.integers(self.group_size[g])
            first, count = self._examples_of(p)
            if count <= 0:
                continue
            ex = first + self._pick.permutation(count)[:room]
            out.append(ex)
            room -= len(ex)
        return np.concatenate(out)

    def chunk_batches(self) -> Iterator[Batch]:
        """The remaining batches of the current chunk; afterwards the iterator stands at the next chunk."""
        while True:
            examples = self._next_examples()
            if examples is None:
                break
            yield self.gather(examples)
        self.chunk += 1
        self.cursor = 0
        self._order = None
        self._pick = _philox(self.seed, self.chunk, self.PICK_STREAM)

    def _examples_of(self, puzzle: int) -> tuple[int, int]:
        """The first example a batch may draw from `puzzle`, and how many there are."""
        start = self.puzzle_indices[puzzle]
        return start, self.puzzle_indices[puzzle + 1] - start

    def batches_in_chunk(self) -> int:
        """Batches a full chunk yields (exact for single-example puzzles, an estimate otherwise)."""
        return int(self.epochs_per_chunk * self.examples_per_epoch() // self.B)


def eval_batches(
    split: Split, global_batch_size: int, rank: int, world_size: int, max_groups: int = 0, max_batches: int = 0
) -> Iterator[Batch]:
    """Every example once, in order; the last global batch padded."""
    gather = _Gather(split, rank, _check_sharding(global_batch_size, rank, world_size))
    n = split.num_examples
    if max_groups > 0 and max_groups < split.num_groups:
        n = int(split.puzzle_indices[split.group_indices[max_groups]])
    for i, start in enumerate(range(0, n, global_batch_size)):
        if max_batches and i >= max_batches:
            break
        examples = np.arange(start, min(start + global_batch_size, n))
        valid = np.ones(global_batch_size, dtype=bool)
        if len(examples) < global_batch_size:
            valid[len(examples) :] = False
            examples = np.concatenate([examples, np.zeros(global_batch_size - len(examples), dtype=examples.dtype)])
        yield gather(examples, valid)
