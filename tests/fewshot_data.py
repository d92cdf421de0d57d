"""A tiny few-shot dataset for the ETRM tests: colour-permutation tasks on a 2x2 grid.

Every task (group) applies its own permutation of the colours 2..4 to the cells. The query inputs
are drawn from one small pool shared by all tasks, so the same query input has a different answer
in each task: only the demos say which. Each group has `num_aug` puzzles (the same task, other
demos and queries); train puzzles hold 3 demos then 3 queries, test puzzles 3 demos then 2 queries.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from trm.data.format import Metadata, write_identifiers, write_split

COLOURS = (2, 3, 4)
SEQ_LEN = 4


def _pairs(rng: np.random.Generator, perm: np.ndarray, n: int, pool: np.ndarray | None) -> tuple:
    grids = pool[rng.integers(len(pool), size=n)] if pool is not None else rng.choice(COLOURS, size=(n, SEQ_LEN))
    return grids, perm[grids]


def make_rule_dataset(
    root: Path,
    num_train_tasks: int = 4,
    num_test_tasks: int = 2,
    num_aug: int = 2,
    seed: int = 0,
    num_demos: int = 3,
    train_queries: int = 3,
) -> Path:
    rng = np.random.default_rng(seed)
    perms = []
    for p in itertools.permutations(COLOURS):
        table = np.arange(5)
        table[list(COLOURS)] = p
        perms.append(table)
    order = rng.permutation(len(perms))
    pool = rng.choice(COLOURS, size=(6, SEQ_LEN))
    names = ["<blank>"]
    splits = {"train": order[:num_train_tasks], "test": order[num_train_tasks : num_train_tasks + num_test_tasks]}
    for split, tasks in splits.items():
        inputs, labels, ids, pidx, gidx, demos = [], [], [], [0], [0], []
        for t in tasks:
            for a in range(num_aug):
                names.append(f"task{t}|{a}")
                ids.append(len(names) - 1)
                di, dl = _pairs(rng, perms[t], num_demos, None)
                qi, ql = _pairs(rng, perms[t], train_queries if split == "train" else 2, pool)
                inputs += [di, qi]
                labels += [dl, ql]
                demos.append(num_demos)
                pidx.append(pidx[-1] + len(di) + len(qi))
            gidx.append(len(ids))
        meta = Metadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=5,
            seq_len=SEQ_LEN,
            num_puzzle_identifiers=0,
            total_groups=0,
            mean_puzzle_examples=float(np.mean(np.diff(pidx))),
        )
        write_split(
            root,
            split,
            meta,
            np.concatenate(inputs),
            np.concatenate(labels),
            np.array(ids),
            np.array(pidx),
            np.array(gidx),
        )
        np.save(root / split / "all__num_demos.npy", np.array(demos, dtype=np.int32))
    for split in splits:  # one identifier space for both splits
        meta_path = root / split / "dataset.json"
        raw = json.loads(meta_path.read_text())
        raw["num_puzzle_identifiers"] = len(names)
        meta_path.write_text(json.dumps(raw))
    write_identifiers(root, names)
    return root
