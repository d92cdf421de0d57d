"""Time the dataset builders at full size and print build time and size on disk.

    python bench/build_data.py                 # Maze-Hard-sized (1000 + 1000 generated, 8x aug) and ARC-AGI-1
    python bench/build_data.py --only maze     # one of: sudoku4x4, maze, arc
    python bench/build_data.py --keep --root data/bench   # keep the built folders

Target (issue 4): each under 10 minutes on a 2-core machine. Builds go to a temporary folder by default
and are deleted afterwards (ARC-AGI-1 with 1000 augmentations takes several GB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from trm.data.build import main as build
from trm.data.output import folder_size

CASES = {
    "sudoku4x4": ["sudoku4x4"],
    "maze": ["maze", "--generate", "1000", "--num-test", "1000", "--aug"],
    "arc": ["arc", "--version", "1", "--num-aug", "1000"],
}
TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(CASES), nargs="+", default=None)
    p.add_argument("--root", type=Path, default=None, help="where to build (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the built folders")
    args = p.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="trm-bench-data-"))
    rows = []
    try:
        for name in args.only or list(CASES):
            out = root / name
            start = time.perf_counter()
            rc = build([*CASES[name], "--out", str(out), "--force"])
            seconds = time.perf_counter() - start
            if rc != 0:
                print(f"{name}: build failed (exit {rc})", file=sys.stderr)
                return rc
            rows.append((name, " ".join(CASES[name]), seconds, folder_size(out)))
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if args.root is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'dataset':<10} {'seconds':>8} {'size MB':>9}  target  command")
    for name, cmd, seconds, size in rows:
        ok = "ok" if seconds < TARGET_S else "SLOW"
        print(f"{name:<10} {seconds:>8.1f} {size / 1e6:>9.1f}  {ok:<6}  tools/build_data.py {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
