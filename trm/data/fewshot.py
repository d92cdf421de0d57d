"""The few-shot view of a dataset: each item is one query pair plus the demos of its puzzle (ETRM).

A puzzle's first `num_demos` examples (`all__num_demos.npy`, written by `tools/build_data.py arc`)
are its demonstration pairs, the rest its queries. An item is one query with up to `max_demos`
demos of the same puzzle, i.e. the same task under the same augmentation:

    inputs, labels           (B, L)     the query, as in `Batch`
    demo_inputs, demo_labels (B, K, L)  raw tokens (PAD where a demo is missing), K = max_demos
    demo_mask                (B, K)     True for real demos

Demos are never queries, so with `--demos-in test` the evaluation tasks' pairs stay out of
training entirely; in the train split of a `--demos-in train` build those tasks have no queries
and are skipped. Train order and seeding follow `trm.data.iterator.TrainIterator` (chunks of
epochs, Philox streams of their own, resumable, every rank building the same global batch and
keeping its slice); only groups that have queries take part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from trm.data.format import IGNORE_LABEL, DatasetError, Split
from trm.data.iterator import Batch, TrainIterator, _check_sharding


@dataclass
class FewShotBatch(Batch):
    demo_inputs: torch.Tensor  # (B_local, K, L) int32
    demo_labels: torch.Tensor  # (B_local, K, L) int32, raw tokens (not IGNORE_LABEL)
    demo_mask: torch.Tensor  # (B_local, K) bool

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            **super().as_dict(),
            "demo_inputs": self.demo_inputs,
            "demo_labels": self.demo_labels,
            "demo_mask": self.demo_mask,
        }

    def to(self, device: torch.device) -> FewShotBatch:
        nb = device.type == "cuda"
        return FewShotBatch(*(getattr(self, f.name).to(device, non_blocking=nb) for f in fields(self)))


def read_num_demos(root: str | Path, split: str, num_puzzles: int) -> np.ndarray | None:
    """Demos per puzzle, or None when the split has no `all__num_demos.npy`."""
    path = Path(root) / split / "all__num_demos.npy"
    if not path.is_file():
        return None
    try:
        demos = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a torn file
        raise DatasetError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if demos.shape != (num_puzzles,) or not np.issubdtype(demos.dtype, np.integer) or (demos < 0).any():
        raise DatasetError(
            f"{path}: expected {num_puzzles} non-negative integers (one per puzzle), got shape "
            f"{demos.shape} dtype {demos.dtype}"
        )
    return demos.astype(np.int64)


class _FewShotGather:
    """Query example indices -> a rank's tensors, with the demos of each query's puzzle."""

    def __init__(self, split: Split, num_demos: np.ndarray, max_demos: int, rank: int, local_batch: int) -> None:
        self.split = split
        self.num_demos = num_demos
        self.K = max_demos
        self.rank, self.local = rank, local_batch
        ign = split.meta.ignore_label_id
        self.ignore = None if ign is None else int(ign)
        self.example_puzzle = np.repeat(np.arange(len(split.puzzle_identifiers)), np.diff(split.puzzle_indices))

    def __call__(self, examples: np.ndarray, valid: np.ndarray | None = None) -> FewShotBatch:
        s, K = self.split, self.K
        sl = slice(self.rank * self.local, (self.rank + 1) * self.local)
        ex = examples[sl]
        n, L = len(ex), s.meta.seq_len
        v = np.ones(n, dtype=bool) if valid is None else valid[sl]
        inputs = np.asarray(s.inputs[ex], dtype=np.int32)
        labels = np.asarray(s.labels[ex], dtype=np.int64)
        if self.ignore is not None:
            labels[labels == self.ignore] = IGNORE_LABEL
        puzzles = self.example_puzzle[ex]
        ids = np.asarray(s.puzzle_identifiers[puzzles], dtype=np.int32)
        demo_inputs = np.full((n, K, L), s.meta.pad_id, dtype=np.int32)
        demo_labels = np.full((n, K, L), s.meta.pad_id, dtype=np.int32)
        demo_mask = np.zeros((n, K), dtype=bool)
        for i, p in enumerate(puzzles):
            if not v[i]:
                continue
            k = min(int(self.num_demos[p]), K)
            start = int(s.puzzle_indices[p])
            demo_inputs[i, :k] = s.inputs[start : start + k]
            demo_labels[i, :k] = s.labels[start : start + k]
            demo_mask[i, :k] = True
        if not v.all():
            inputs[~v] = s.meta.pad_id
            labels[~v] = IGNORE_LABEL
            ids[~v] = s.meta.blank_identifier_id
        t = torch.from_numpy
        return FewShotBatch(t(inputs), t(labels), t(ids), t(v), t(demo_inputs), t(demo_labels), t(demo_mask))


def _groups_with_queries(split: Split, num_demos: np.ndarray, max_groups: int) -> np.ndarray:
    """Groups whose puzzles hold at least one query, the first `max_groups` of them when > 0."""
    sizes = np.diff(split.puzzle_indices)
    has_query = sizes > num_demos
    gi = split.group_indices
    groups = np.array([g for g in range(split.num_groups) if has_query[gi[g] : gi[g + 1]].any()], dtype=np.int64)
    return groups[:max_groups] if max_groups > 0 else groups


class FewShotTrainIterator(TrainIterator):
    """Training items, resumable: `TrainIterator`'s chunks and state over the query examples only (the
    demos of a puzzle are its first `num_demos` examples), each gathered with its puzzle's demos."""

    ORDER_STREAM, PICK_STREAM = 10, 11  # the plain iterator's are 0 and 1: the two views never share draws

    def __init__(
        self,
        split: Split,
        num_demos: np.ndarray,
        max_demos: int,
        global_batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        epochs_per_chunk: int,
        max_groups: int = 0,
    ) -> None:
        super().__init__(split, global_batch_size, rank, world_size, seed, epochs_per_chunk)
        self.gather = _FewShotGather(
            split, num_demos, max_demos, rank, _check_sharding(global_batch_size, rank, world_size)
        )
        self.groups = _groups_with_queries(split, num_demos, max_groups)
        self.num_groups = len(self.groups)
        if self.num_groups == 0:
            raise DatasetError(
                "the train split has no puzzle with a query pair after its demos (all__num_demos.npy "
                "counts every example as a demo); the few-shot view has nothing to train on"
            )
        gi = split.group_indices.astype(np.int64)
        self.group_start, self.group_size = gi[self.groups], gi[self.groups + 1] - gi[self.groups]
        self.single_example = False  # a query comes with its demos: never the one-example fast path
        self.num_demos = num_demos
        puzzles = np.concatenate([np.arange(a, a + n) for a, n in zip(self.group_start, self.group_size)])
        self.mean_queries = float(np.mean(np.diff(self.puzzle_indices)[puzzles] - num_demos[puzzles]))

    def examples_per_epoch(self) -> float:
        return self.num_groups * self.mean_queries

    def _examples_of(self, puzzle: int) -> tuple[int, int]:
        first_query = self.puzzle_indices[puzzle] + self.num_demos[puzzle]
        return first_query, self.puzzle_indices[puzzle + 1] - first_query


def eval_query_examples(
    split: Split, num_demos: np.ndarray, max_groups: int = 0, max_augmentations: int = 0
) -> np.ndarray:
    """Every query example in order: of the first `max_groups` groups, the first `max_augmentations`
    puzzles (augmented variants; the original comes first) of each, when those are > 0."""
    gi, pi = split.group_indices, split.puzzle_indices
    num_groups = split.num_groups if max_groups <= 0 else min(max_groups, split.num_groups)
    out = []
    for g in range(num_groups):
        last = gi[g + 1] if max_augmentations <= 0 else min(gi[g + 1], gi[g] + max_augmentations)
        for p in range(int(gi[g]), int(last)):
            out.append(np.arange(pi[p] + num_demos[p], pi[p + 1]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def fewshot_eval_batches(
    split: Split,
    num_demos: np.ndarray,
    max_demos: int,
    global_batch_size: int,
    rank: int,
    world_size: int,
    max_groups: int = 0,
    max_batches: int = 0,
    max_augmentations: int = 0,
) -> Iterator[FewShotBatch]:
    """Every query once, in order, with its demos; the last global batch padded and marked by `valid`."""
    gather = _FewShotGather(split, num_demos, max_demos, rank, _check_sharding(global_batch_size, rank, world_size))
    queries = eval_query_examples(split, num_demos, max_groups, max_augmentations)
    for i, start in enumerate(range(0, len(queries), global_batch_size)):
        if max_batches and i >= max_batches:
            break
        examples = queries[start : start + global_batch_size]
        valid = np.ones(global_batch_size, dtype=bool)
        if len(examples) < global_batch_size:
            valid[len(examples) :] = False
            examples = np.concatenate([examples, np.zeros(global_batch_size - len(examples), dtype=examples.dtype)])
        yield gather(examples, valid)


def probe_items(
    split: Split, num_demos: np.ndarray, max_demos: int, max_groups: int, num_items: int = 64
) -> FewShotBatch | None:
    """One query of the first puzzle of each of the first groups that have one: a fixed set of distinct
    tasks for the encoder-collapse diagnostic (None when there is none)."""
    groups = _groups_with_queries(split, num_demos, max_groups)[:num_items]
    ex = []
    for g in groups:
        for p in range(int(split.group_indices[g]), int(split.group_indices[g + 1])):
            if split.puzzle_indices[p + 1] > split.puzzle_indices[p] + num_demos[p]:
                ex.append(int(split.puzzle_indices[p] + num_demos[p]))
                break
    if len(ex) < 2:
        return None
    return _FewShotGather(split, num_demos, max_demos, 0, len(ex))(np.array(ex, dtype=np.int64))
