"""Tower of Hanoi builder: every transition of the optimal solutions, for each of the 6 (source, target) peg
pairs and each disk count in the train/test ranges (train 3-6, test 7-10 by default: test is harder).

Each transition is its own puzzle and its own group (identifier 0), so one epoch visits every transition.
`--encoding action` (vocab 4 + max disks) asks for the move; `--encoding state` (vocab 4) for the next state.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from trm.data import hanoi
from trm.data.output import BuildError, Built, SplitData


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoding", choices=("action", "state"), default="action")
    p.add_argument("--train-min", type=int, default=3)
    p.add_argument("--train-max", type=int, default=6)
    p.add_argument("--test-min", type=int, default=7)
    p.add_argument("--test-max", type=int, default=10)


def _split(disks: range, encoding: str, seq_len: int) -> SplitData:
    inputs, labels = [], []
    for n in disks:
        for source, target in itertools.permutations(hanoi.PEGS, 2):
            states, moves = hanoi.solve(n, source, target)
            for k, move in enumerate(moves):
                i, lab = hanoi.encode(states[k], states[k + 1], move, target, seq_len, encoding)
                inputs.append(i)
                labels.append(lab)
    return SplitData.one_example_per_puzzle(np.stack(inputs), np.stack(labels), 1)


def build(args: argparse.Namespace) -> Built:
    for lo, hi, name in ((args.train_min, args.train_max, "train"), (args.test_min, args.test_max, "test")):
        if not 2 <= lo <= hi:
            raise BuildError(f"--{name}-min/--{name}-max must satisfy 2 <= min <= max, got {lo} and {hi}")
        if hi > 20:
            raise BuildError(
                f"--{name}-max {hi}: more than 20 disks means over 6 million transitions per "
                f"peg pair; choose at most 20"
            )
    max_disks = max(args.train_max, args.test_max)
    seq_len = hanoi.seq_len_for(max_disks)
    vocab = hanoi.DISK_OFFSET + max_disks if args.encoding == "action" else 4
    splits = {
        "train": _split(range(args.train_min, args.train_max + 1), args.encoding, seq_len),
        "test": _split(range(args.test_min, args.test_max + 1), args.encoding, seq_len),
    }
    meta = dict(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=1
    )
    report = [
        f"encoding {args.encoding}: vocab {vocab}, seq_len {seq_len}; train disks "
        f"{args.train_min}-{args.train_max}, test disks {args.test_min}-{args.test_max}"
    ]
    return Built(splits=splits, meta=meta, identifiers=["<blank>"], report=report)
