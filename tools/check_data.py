#!/usr/bin/env python
"""Check dataset folders against the on-disk format: `python tools/check_data.py data/maze-30x30-hard-1k [...]`.

Prints every problem (missing file, shape or dtype mismatch, index arrays not increasing, token outside the
vocabulary) or a one-line description of each split; exits 1 if any folder has a problem.
"""

import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    from trm.data.format import read_split, validate_dataset

    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if any(p in ("-h", "--help") for p in paths):
        print(__doc__.strip())
        return 0
    options = [p for p in paths if p.startswith("-")]
    if options:
        print(
            f"check_data: error: unknown option {options[0]}; usage: tools/check_data.py DATASET_FOLDER [...]",
            file=sys.stderr,
        )
        return 2
    bad = 0
    for path in paths:
        problems = validate_dataset(path)
        if problems:
            bad += 1
            print(f"{path}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
            continue
        for split in ("train", "test"):
            s = read_split(path, split)
            m = s.meta
            print(
                f"{path}/{split}: ok: {s.num_examples} examples, {len(s.puzzle_identifiers)} puzzles, "
                f"{s.num_groups} groups; seq_len {m.seq_len}, vocab {m.vocab_size}, "
                f"{m.num_puzzle_identifiers} puzzle ids"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

    sys.exit(main(sys.argv[1:]))
