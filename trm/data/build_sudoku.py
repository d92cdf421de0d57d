"""Sudoku builders: 4x4 generated offline, and 9x9 from the Sudoku-Extreme CSV (or generated offline).

Tokens: 0 = PAD, 1 = blank, digit d -> d + 1 (vocab 6 for 4x4, 11 for 9x9); labels are the full solution.
Train: one group per original puzzle holding the original and `num_aug` shuffled variants (one example
each), so every epoch samples a fresh variant per group. Test: one puzzle per group, never shuffled, and no
train puzzle or variant ever equals a test puzzle.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from trm.data import sudoku
from trm.data.output import BuildError, SplitData


@dataclass
class Built:
    """What a builder hands to the writer, plus lines to print."""

    splits: dict[str, SplitData]
    meta: dict[str, object]
    identifiers: list[str]
    extra_files: dict[str, str] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)


def row_keys(a: np.ndarray) -> list[bytes]:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.uint8))
    return [r.tobytes() for r in a]


def _distinct_rows(puzzles: np.ndarray, solutions: np.ndarray, exclude: set[bytes],
                   seen: set[bytes]) -> tuple[list[int], int]:
    """Indices of rows new to `seen` and not in `exclude` (updates `seen`), and how many hit `exclude`."""
    keep, hit = [], 0
    for i, k in enumerate(row_keys(puzzles)):
        if k in exclude:
            hit += 1
        elif k not in seen:
            seen.add(k)
            keep.append(i)
    return keep, hit


def augment_groups(puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, box: int,
                   forbidden: set[bytes], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Each original followed by `num_aug` shuffled variants; variants equal to a forbidden puzzle redrawn.

    Returns (puzzles, solutions) of shape (G * (num_aug + 1), cells) and the number of redrawn variants.
    """
    num, cells = puzzles.shape
    reps = num_aug + 1
    out_p = np.repeat(puzzles, reps, axis=0)
    out_s = np.repeat(solutions, reps, axis=0)
    todo = np.flatnonzero(np.arange(num * reps) % reps != 0)  # rows 0, reps, 2*reps... stay original
    rejected = 0
    for _attempt in range(1000):
        if len(todo) == 0:
            break
        base = (todo // reps) * reps
        p, s = sudoku.shuffle_pairs([out_p[base], out_s[base]], box, rng)
        out_p[todo], out_s[todo] = p, s
        bad = np.array([k in forbidden for k in row_keys(p)], dtype=bool).reshape(len(p))
        rejected += int(bad.sum())
        todo = todo[bad]
    else:
        raise BuildError(f"could not draw {num_aug} variants that differ from every test puzzle "
                         f"after 1000 tries")
    return out_p, out_s, rejected


def _encode(grids: np.ndarray) -> np.ndarray:
    return (np.asarray(grids) + 1).astype(np.uint8)


def _meta(box: int) -> dict[str, object]:
    n = box * box
    return dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=n + 2, seq_len=n * n,
                num_puzzle_identifiers=1)


def assemble(train_p: np.ndarray, train_s: np.ndarray, test_p: np.ndarray, test_s: np.ndarray, box: int,
             num_aug: int, rng: np.random.Generator) -> Built:
    """Augment the train puzzles (never onto a test puzzle) and pack both splits."""
    test_keys = set(row_keys(test_p))
    clash = sum(k in test_keys for k in row_keys(train_p))
    if clash:
        raise BuildError(f"{clash} train puzzles equal a test puzzle; remove them from the train source")
    aug_p, aug_s, rejected = augment_groups(train_p, train_s, num_aug, box, test_keys, rng)
    splits = {
        "train": SplitData.one_example_per_puzzle(_encode(aug_p), _encode(aug_s), num_aug + 1),
        "test": SplitData.one_example_per_puzzle(_encode(test_p), _encode(test_s), 1),
    }
    report = [f"train: {len(train_p)} groups x {num_aug + 1} puzzles (original + {num_aug} variants); "
              f"{rejected} variants equal to a test puzzle were rejected and redrawn",
              f"test: {len(test_p)} puzzles, not augmented"]
    return Built(splits=splits, meta=_meta(box), identifiers=["<blank>"], report=report)


def subsample(p: np.ndarray, s: np.ndarray, size: int | None, rng: np.random.Generator,
              what: str) -> tuple[np.ndarray, np.ndarray]:
    if size is None:
        return p, s
    if size > len(p):
        raise BuildError(f"--subsample-size {size} is larger than the {len(p)} {what} puzzles available")
    idx = np.sort(rng.choice(len(p), size=size, replace=False))
    return p[idx], s[idx]


# ---------------------------------------------------------------------------------------------- 4x4


def add_sudoku4x4_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-train", type=int, default=1000,
                   help="distinct original train puzzles (default 1000)")
    p.add_argument("--num-test", type=int, default=500, help="distinct test puzzles (default 500)")
    p.add_argument("--num-aug", type=int, default=100,
                   help="shuffled variants per train puzzle (default 100)")
    p.add_argument("--subsample-size", type=int, default=None,
                   help="keep only this many of the train puzzles (the seeds' recipe: 100 with --num-aug 1)")
    p.add_argument("--seed", type=int, default=0)


def _distinct_minimal_4x4(num: int, rng: np.random.Generator,
                          exclude: set[bytes]) -> tuple[np.ndarray, np.ndarray, int]:
    seen: set[bytes] = set()
    ps, ss, hits = [], [], 0
    have = 0
    for _attempt in range(200):
        if have >= num:
            break
        p, s = sudoku.minimal_puzzles_4x4(max(2 * (num - have), 64), rng)
        keep, hit = _distinct_rows(p, s, exclude, seen)
        hits += hit
        keep = keep[: num - have]
        ps.append(p[keep])
        ss.append(s[keep])
        have += len(keep)
    else:
        raise BuildError(f"could not find {num} distinct minimal 4x4 puzzles (only {have}); ask for fewer")
    return np.concatenate(ps), np.concatenate(ss), hits


def build_sudoku4x4(args: argparse.Namespace) -> Built:
    for name in ("num_train", "num_test"):
        if getattr(args, name) < 1:
            raise BuildError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.num_aug < 0:
        raise BuildError(f"--num-aug must be >= 0, got {args.num_aug}")
    rng = np.random.default_rng(args.seed)
    test_p, test_s, _ = _distinct_minimal_4x4(args.num_test, rng, set())
    train_p, train_s, clashes = _distinct_minimal_4x4(args.num_train, rng, set(row_keys(test_p)))
    train_p, train_s = subsample(train_p, train_s, args.subsample_size, rng, "generated train")
    built = assemble(train_p, train_s, test_p, test_s, box=2, num_aug=args.num_aug, rng=rng)
    built.report.insert(0, f"generated minimal 4x4 puzzles with unique solutions; {clashes} generated train "
                           f"puzzles equal to a test puzzle were rejected")
    return built
