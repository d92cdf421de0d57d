"""Random datasets of a given shape in the on-disk format, for benches that measure speed, not learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trm.data.format import Metadata, write_split


def write_random_dataset(
    root: Path, vocab: int, seq_len: int, num_ids: int, num_train: int, num_test: int, seed: int = 0
) -> Path:
    """Random puzzles (tokens 1..vocab-1) with one example per puzzle and group; puzzle ids in [0, num_ids)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("test", num_test)):
        meta = Metadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=vocab,
            seq_len=seq_len,
            num_puzzle_identifiers=num_ids,
            total_groups=n,
            mean_puzzle_examples=1.0,
            total_puzzles=n,
        )
        inputs = rng.integers(1, vocab, (n, seq_len))
        labels = rng.integers(1, vocab, (n, seq_len))
        ids = rng.integers(0, num_ids, n) if num_ids > 1 else np.zeros(n, dtype=np.int64)
        write_split(root, split, meta, inputs, labels, ids, np.arange(n + 1), np.arange(n + 1))
    return root
