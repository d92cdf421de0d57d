"""Maze builder: the Maze-Hard CSV (local or Hugging Face `sapientinc/maze-30x30-hard-1k`) or offline mazes.

Tokens: 0 = PAD and "# SGo" -> 1..5 (wall, open, start, goal, path); vocab 6, seq_len = size^2 (900).
Every cell is supervised. Train: one group per maze; with --aug its 8 dihedral variants are the group's
puzzles (one example each). Test: one puzzle per maze, never transformed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from trm.data import maze
from trm.data.csvgrid import PuzzleTable, csv_pair, read_puzzle_csv
from trm.data.grids import dihedral
from trm.data.output import BuildError, Built, SplitData, progress, row_keys

HF_REPO = "sapientinc/maze-30x30-hard-1k"
QUESTION_CHARS = {ch: tok for ch, tok in maze.TOKEN_CHARS.items() if ch != "o"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--input-csv",
        type=str,
        default=None,
        help="a folder holding train.csv and test.csv, or the train CSV file (then give "
        "--test-csv); without this and without --generate, downloads " + HF_REPO,
    )
    src.add_argument("--generate", type=int, default=None, metavar="N", help="generate N train mazes offline")
    p.add_argument("--test-csv", type=str, default=None, help="test CSV file when --input-csv is a file")
    p.add_argument("--num-test", type=int, default=None, help="test mazes to generate (default: same as N)")
    p.add_argument("--size", type=int, default=30, help="side of generated mazes (default 30)")
    p.add_argument(
        "--min-path-len",
        type=int,
        default=110,
        help="generated mazes keep shortest paths longer than this many moves (default 110, the 'hard' set)",
    )
    p.add_argument(
        "--loop-prob",
        type=float,
        default=0.05,
        help="chance of knocking out each inner wall of the generated perfect maze (default 0.05)",
    )
    p.add_argument(
        "--no-unique-path",
        dest="unique_path",
        action="store_false",
        help="allow generated mazes whose shortest path is not unique (the label picks one)",
    )
    p.add_argument("--subsample-size", type=int, default=None, help="random train rows to keep from the CSV")
    p.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each train maze")
    p.add_argument("--seed", type=int, default=0)


def _read_checked(path: Path) -> PuzzleTable:
    table = _read(path)
    for i in range(len(table)):
        q, a = table.questions[i], table.answers[i]
        problem = _csv_problem(q, a)
        if problem:
            raise BuildError(f"{path}: line {table.lines[i]}: {problem}")
    return table


def _read(path: Path) -> PuzzleTable:
    # the side is implied by the first data row; every row must then have side^2 cells
    cells = 900
    if path.is_file():
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                next(reader, None)
                row = next(reader, None) or []
        except (UnicodeDecodeError, csv.Error) as e:
            raise BuildError(f"{path}: line 2: cannot be read as UTF-8 CSV ({e})") from None
        cells = len(row[1]) if len(row) == 4 else cells
    side = round(cells**0.5)
    if cells < 4 or side * side != cells:
        raise BuildError(
            f"{path}: line 2: question has {cells} characters, expected a square maze of at least "
            f"2x2 cells (e.g. 900 = 30x30)"
        )
    return read_puzzle_csv(path, cells, QUESTION_CHARS, maze.TOKEN_CHARS)


def _csv_problem(q: np.ndarray, a: np.ndarray) -> str | None:
    """Structural checks only: the published labels are not re-solved (a BFS tie could differ from ours)."""
    for tok, name in ((maze.START, "S"), (maze.GOAL, "G")):
        if np.count_nonzero(q == tok) != 1:
            return f"question has {np.count_nonzero(q == tok)} '{name}' cells, expected exactly 1"
    on_path = a == maze.PATH
    if np.any(a[~on_path] != q[~on_path]):
        return "answer differs from the question outside the path cells 'o'"
    if np.any(q[on_path] != maze.OPEN):
        return "answer marks a path cell 'o' on a wall, S or G of the question"
    return None


def _generate(
    num: int, args: argparse.Namespace, rng: np.random.Generator, exclude: set[bytes], desc: str
) -> tuple[np.ndarray, np.ndarray]:
    qs, ans = [], []
    seen = set(exclude)
    bar = progress(desc, total=num)
    misses = 0
    while len(qs) < num:
        pair = maze.make_puzzle(args.size, rng, args.min_path_len, args.loop_prob, args.unique_path)
        if pair is None:
            misses += 1
            if misses > 10:
                raise BuildError(
                    f"no {args.size}x{args.size} maze with a shortest path longer than "
                    f"--min-path-len {args.min_path_len} after {misses * 200} tries; lower it"
                )
            continue
        key = row_keys(pair[0][None])[0]
        if key in seen:
            continue
        seen.add(key)
        qs.append(pair[0])
        ans.append(pair[1])
        bar.update()
    bar.close()
    return np.stack(qs), np.stack(ans)


def _all_dihedral(x: np.ndarray, side: int) -> np.ndarray:
    """(N, cells) -> (N * 8, cells), the 8 transforms of each row consecutively."""
    g = x.reshape(-1, side, side)
    return np.stack([dihedral(g, t).reshape(len(x), -1) for t in range(8)], axis=1).reshape(-1, side * side)


def build(args: argparse.Namespace) -> Built:
    rng = np.random.default_rng(args.seed)
    if args.generate is not None:
        num_test = args.generate if args.num_test is None else args.num_test
        if args.generate < 1 or num_test < 1:
            raise BuildError(f"--generate and --num-test must be >= 1, got {args.generate} and {num_test}")
        if args.subsample_size is not None or args.test_csv is not None:
            raise BuildError(
                "--subsample-size/--test-csv read from CSV; with --generate N ask for N train "
                "and --num-test M test mazes directly"
            )
        if args.size < 4:
            raise BuildError(f"--size must be at least 4, got {args.size}")
        test_q, test_a = _generate(num_test, args, rng, set(), "test mazes")
        # no train maze, nor any dihedral variant of one, may equal a test maze
        forbidden = set(row_keys(_all_dihedral(test_q, args.size)))
        train_q, train_a = _generate(args.generate, args, rng, forbidden, "train mazes")
        source = (
            f"generated offline: {args.size}x{args.size}, shortest path > {args.min_path_len} moves, "
            f"loop_prob {args.loop_prob}, unique shortest path {args.unique_path}"
        )
    else:
        if args.num_test is not None:
            raise BuildError("--num-test is for --generate")
        train_path, test_path = csv_pair(args.input_csv, args.test_csv, HF_REPO)
        train, test = _read_checked(train_path), _read_checked(test_path)
        if train.questions.shape[1] != test.questions.shape[1]:
            raise BuildError(f"{train_path} and {test_path} hold mazes of different sizes")
        if args.subsample_size is not None:
            if not 1 <= args.subsample_size <= len(train):
                raise BuildError(f"--subsample-size must be in [1, {len(train)}], got {args.subsample_size}")
            train = train.take(np.sort(rng.choice(len(train), args.subsample_size, replace=False)))
        train_q, train_a, test_q, test_a = train.questions, train.answers, test.questions, test.answers
        source = f"{train_path} + {test_path}"
    side = round(train_q.shape[1] ** 0.5)
    reps = 8 if args.aug else 1
    if args.aug:
        train_q, train_a = _all_dihedral(train_q, side), _all_dihedral(train_a, side)
    splits = {
        "train": SplitData.one_example_per_puzzle(train_q, train_a, reps),
        "test": SplitData.one_example_per_puzzle(test_q, test_a, 1),
    }
    meta = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=len(maze.CHARSET) + 1,
        seq_len=side * side,
        num_puzzle_identifiers=1,
    )
    path_len = (test_a == maze.PATH).sum(axis=1) + 1
    report = [
        f"source: {source}",
        f"train: {len(train_q) // reps} mazes x {reps} puzzles; test: {len(test_q)} mazes "
        f"(shortest path {path_len.min()}..{path_len.max()} moves, mean {path_len.mean():.0f})",
    ]
    return Built(splits=splits, meta=meta, identifiers=["<blank>"], report=report)
