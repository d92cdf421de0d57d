"""Sudoku builders: 4x4 generated offline, and 9x9 from the Sudoku-Extreme CSV (or generated offline).

Tokens: 0 = PAD, 1 = blank, digit d -> d + 1 (vocab 6 for 4x4, 11 for 9x9); labels are the full solution.
Train: one group per original puzzle holding the original and `num_aug` shuffled variants (one example
each), so every epoch samples a fresh variant per group. Test: one puzzle per group, never shuffled, and no
train puzzle or variant ever equals a test puzzle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trm.data import sudoku
from trm.data.csvgrid import PuzzleTable, csv_pair, read_puzzle_csv
from trm.data.output import BuildError, Built, SplitData, progress, row_keys


def _distinct_rows(
    puzzles: np.ndarray, solutions: np.ndarray, exclude: set[bytes], seen: set[bytes]
) -> tuple[list[int], int]:
    """Indices of rows new to `seen` and not in `exclude` (updates `seen`), and how many hit `exclude`."""
    keep, hit = [], 0
    for i, k in enumerate(row_keys(puzzles)):
        if k in exclude:
            hit += 1
        elif k not in seen:
            seen.add(k)
            keep.append(i)
    return keep, hit


def augment_groups(
    puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, box: int, forbidden: set[bytes], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each original followed by `num_aug` shuffled variants; variants equal to a forbidden puzzle redrawn.

    Returns (puzzles, solutions) of shape (G * (num_aug + 1), cells) and the number of redrawn variants.
    """
    num, cells = puzzles.shape
    reps = num_aug + 1
    out_p = np.repeat(np.asarray(puzzles, np.uint8), reps, axis=0)
    out_s = np.repeat(np.asarray(solutions, np.uint8), reps, axis=0)
    rejected = 0
    chunk = max(1, 200_000 // reps) * reps  # bounds the int64 temporaries of the shuffle
    for start in progress("augmenting", iterable=range(0, num * reps, chunk)):
        rows = np.arange(start, min(start + chunk, num * reps))
        todo = rows[rows % reps != 0]  # the first puzzle of each group stays the original
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
            raise BuildError(f"could not draw {num_aug} variants that differ from every test puzzle after 1000 tries")
    return out_p, out_s, rejected


def _encode(grids: np.ndarray) -> np.ndarray:
    return (np.asarray(grids) + 1).astype(np.uint8)


def _meta(box: int) -> dict[str, object]:
    n = box * box
    return dict(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=n + 2, seq_len=n * n, num_puzzle_identifiers=1
    )


def assemble(
    train_p: np.ndarray,
    train_s: np.ndarray,
    test_p: np.ndarray,
    test_s: np.ndarray,
    box: int,
    num_aug: int,
    rng: np.random.Generator,
) -> Built:
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
    report = [
        f"train: {len(train_p)} groups x {num_aug + 1} puzzles (original + {num_aug} variants); "
        f"{rejected} variants equal to a test puzzle were rejected and redrawn",
        f"test: {len(test_p)} puzzles, not augmented",
    ]
    return Built(splits=splits, meta=_meta(box), identifiers=["<blank>"], report=report)


def subsample(
    p: np.ndarray, s: np.ndarray, size: int | None, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if size is None:
        return p, s
    if size > len(p):
        raise BuildError(f"--subsample-size {size} is larger than the {len(p)} {what} puzzles available")
    idx = np.sort(rng.choice(len(p), size=size, replace=False))
    return p[idx], s[idx]


# ---------------------------------------------------------------------------------------------- 4x4


def add_sudoku4x4_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-train", type=int, default=1000, help="distinct original train puzzles (default 1000)")
    p.add_argument("--num-test", type=int, default=500, help="distinct test puzzles (default 500)")
    p.add_argument("--num-aug", type=int, default=100, help="shuffled variants per train puzzle (default 100)")
    p.add_argument(
        "--subsample-size",
        type=int,
        default=None,
        help="keep only this many of the train puzzles (the seeds' recipe: 100 with --num-aug 1)",
    )
    p.add_argument("--seed", type=int, default=0)


# Every minimal 4x4 puzzle with a unique solution (none of its givens can go), counted exactly over all
# 288 grids x 2^16 sets of givens (tests/test_tool_inputs.py recounts it). The generator reaches each.
NUM_MINIMAL_4X4 = 85_632


def _distinct_minimal_4x4(
    num: int, rng: np.random.Generator, exclude: set[bytes], what: str = "puzzles"
) -> tuple[np.ndarray, np.ndarray, int]:
    seen: set[bytes] = set()
    ps, ss, hits = [], [], 0
    have = 0
    with progress(f"distinct minimal 4x4 {what}", total=num) as bar:
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
            bar.update(len(keep))
        else:
            raise BuildError(f"could not find {num} distinct minimal 4x4 puzzles (only {have}); ask for fewer")
    return np.concatenate(ps), np.concatenate(ss), hits


def build_sudoku4x4(args: argparse.Namespace) -> Built:
    for name in ("num_train", "num_test"):
        if getattr(args, name) < 1:
            raise BuildError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.num_aug < 0:
        raise BuildError(f"--num-aug must be >= 0, got {args.num_aug}")
    # Collecting the last distinct puzzles gets slow (each draw is random): refuse asks near the total.
    limit = int(0.9 * NUM_MINIMAL_4X4)
    if args.num_train + args.num_test > limit:
        raise BuildError(
            f"--num-train {args.num_train} + --num-test {args.num_test} = {args.num_train + args.num_test} distinct "
            f"puzzles asked, but only {NUM_MINIMAL_4X4:,} distinct minimal 4x4 puzzles exist (at most {limit:,} are "
            f"drawn in reasonable time); ask for fewer and use --num-aug for more training examples"
        )
    rng = np.random.default_rng(args.seed)
    test_p, test_s, _ = _distinct_minimal_4x4(args.num_test, rng, set(), "test puzzles")
    train_p, train_s, clashes = _distinct_minimal_4x4(args.num_train, rng, set(row_keys(test_p)), "train puzzles")
    train_p, train_s = subsample(train_p, train_s, args.subsample_size, rng, "generated train")
    built = assemble(train_p, train_s, test_p, test_s, box=2, num_aug=args.num_aug, rng=rng)
    built.report.insert(
        0,
        f"generated minimal 4x4 puzzles with unique solutions; {clashes} generated train "
        f"puzzles equal to a test puzzle were rejected",
    )
    return built


# ---------------------------------------------------------------------------------------------- 9x9

HF_REPO = "sapientinc/sudoku-extreme"
QUESTION_CHARS = {".": 0, **{str(d): d for d in range(1, 10)}}
ANSWER_CHARS = {str(d): d for d in range(1, 10)}


def _size_arg(text: str) -> int:
    """An int >= 0; 0 means 'all'."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (0 = all), got '{text}'") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0 = all), got {v}")
    return v


def add_sudoku_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--input-csv",
        type=str,
        default=None,
        help="a folder holding train.csv and test.csv, or the train CSV file itself (then give "
        "--test-csv); without this and without --generate, downloads " + HF_REPO,
    )
    src.add_argument(
        "--generate",
        type=int,
        default=None,
        metavar="N",
        help="generate N train puzzles offline with the solver (unique solutions, rated by "
        "backtracks) instead of reading Sudoku-Extreme",
    )
    p.add_argument("--test-csv", type=str, default=None, help="test CSV file when --input-csv is a file")
    p.add_argument("--num-test", type=int, default=None, help="test puzzles to generate with --generate (default 1000)")
    p.add_argument(
        "--subsample-size",
        type=_size_arg,
        default=None,
        help="random train puzzles to keep from the CSV, seeded (default 1000; 0 = all)",
    )
    p.add_argument(
        "--test-subsample-size", type=_size_arg, default=0, help="random test puzzles to keep, seeded (default 0 = all)"
    )
    p.add_argument("--num-aug", type=int, default=1000, help="shuffled variants per train puzzle (default 1000)")
    p.add_argument(
        "--min-difficulty",
        type=float,
        default=None,
        help="keep only puzzles whose rating (solver backtracks) is at least this, in both splits",
    )
    p.add_argument("--seed", type=int, default=0)


def default_out(args: argparse.Namespace) -> str:
    def size(v: int | None) -> str:
        if not v:
            return "full"
        return f"{v // 1000}k" if v % 1000 == 0 else str(v)

    if args.generate is not None:
        return f"data/sudoku-gen-{size(args.generate)}-aug-{args.num_aug}"
    return f"data/sudoku-extreme-{size(_train_size(args))}-aug-{args.num_aug}"


def _train_size(args: argparse.Namespace) -> int:
    return 1000 if args.subsample_size is None else args.subsample_size


def _read_checked(path: Path) -> PuzzleTable:
    table = read_puzzle_csv(path, 81, QUESTION_CHARS, ANSWER_CHARS)
    for start in range(0, len(table), 200_000):
        q, a = table.questions[start : start + 200_000], table.answers[start : start + 200_000]
        bad_given = ~np.all((q == 0) | (q == a), axis=1)
        bad_answer = ~sudoku.valid_solutions(a, 3)
        for bad, what in (
            (bad_answer, "answer is not a valid 9x9 Sudoku solution"),
            (bad_given, "question has a given digit that differs from the answer"),
        ):
            if bad.any():
                raise BuildError(f"{path}: line {table.lines[start + int(np.argmax(bad))]}: {what}")
    return table


def _filter(
    table: PuzzleTable, args: argparse.Namespace, size: int, what: str, rng: np.random.Generator
) -> PuzzleTable:
    if args.min_difficulty is not None:
        table = table.take(np.flatnonzero(table.ratings >= args.min_difficulty))
        if len(table) == 0:
            raise BuildError(f"{table.path}: no {what} puzzle has rating >= --min-difficulty {args.min_difficulty}")
    if size:
        if size > len(table):
            raise BuildError(
                f"{table.path}: asked for {size} {what} puzzles but only {len(table)} are "
                f"available (after --min-difficulty)"
            )
        table = table.take(np.sort(rng.choice(len(table), size=size, replace=False)))
    return table


def generate_9x9(
    num: int, rng: np.random.Generator, min_difficulty: float | None, exclude: set[bytes], desc: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`num` distinct minimal 9x9 puzzles with unique solutions, none in `exclude`; with their ratings."""
    ps, ss, rs = [], [], []
    seen = set(exclude)
    bar = progress(desc, total=num)
    tries = 0
    while len(ps) < num:
        tries += 1
        if tries > 50 * num + 100:
            raise BuildError(
                f"generated {tries} puzzles but only {len(ps)} reached rating >= "
                f"{min_difficulty}; lower --min-difficulty"
            )
        grid = sudoku.random_grid(3, rng)
        puzzle = sudoku.minimal_puzzle(grid, 3, rng)
        _, rating = sudoku.solve(puzzle, 3, limit=2)
        key = row_keys(puzzle[None])[0]
        if (min_difficulty is not None and rating < min_difficulty) or key in seen:
            continue
        seen.add(key)
        ps.append(puzzle)
        ss.append(grid)
        rs.append(rating)
        bar.update()
    bar.close()
    return np.stack(ps), np.stack(ss), np.array(rs, dtype=np.float64)


def build_sudoku(args: argparse.Namespace) -> Built:
    if args.num_aug < 0:
        raise BuildError(f"--num-aug must be >= 0, got {args.num_aug}")
    rng = np.random.default_rng(args.seed)
    if args.generate is not None:
        num_test = 1000 if args.num_test is None else args.num_test
        for name in ("subsample_size", "test_subsample_size", "test_csv"):
            if getattr(args, name):
                raise BuildError(
                    f"--{name.replace('_', '-')} reads from CSV; with --generate N ask for N "
                    f"train and --num-test M test puzzles directly"
                )
        if args.generate < 1 or num_test < 1:
            raise BuildError(f"--generate and --num-test must be >= 1, got {args.generate} and {num_test}")
        test_p, test_s, test_r = generate_9x9(num_test, rng, args.min_difficulty, set(), "test puzzles")
        train_p, train_s, train_r = generate_9x9(
            args.generate, rng, args.min_difficulty, set(row_keys(test_p)), "train puzzles"
        )
        source = f"generated offline (seed {args.seed}); rating = solver backtracks"
    else:
        if args.num_test is not None:
            raise BuildError("--num-test is for --generate; to use fewer CSV test puzzles pass --test-subsample-size")
        train_path, test_path = csv_pair(args.input_csv, args.test_csv, HF_REPO)
        train = _filter(_read_checked(train_path), args, _train_size(args), "train", rng)
        test = _filter(_read_checked(test_path), args, args.test_subsample_size, "test", rng)
        train_p, train_s, train_r = train.questions, train.answers, train.ratings
        test_p, test_s, test_r = test.questions, test.answers, test.ratings
        source = f"{train_path} + {test_path}"
    built = assemble(train_p, train_s, test_p, test_s, box=3, num_aug=args.num_aug, rng=rng)
    built.report.insert(0, f"source: {source}; mean rating train {train_r.mean():.1f}, test {test_r.mean():.1f}")
    return built
