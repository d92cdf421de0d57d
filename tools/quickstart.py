#!/usr/bin/env python
"""Quick start: build the 4x4 Sudoku set once, then train a small TRM on it (~2 minutes on 2 CPU cores).

    python tools/quickstart.py                      # data/sudoku-4x4 and runs/quickstart/
    python tools/quickstart.py +run_name=again      # another run; any trainer override works

It is `tools/build_data.py sudoku4x4` followed by `tools/train.py trm/configs/quickstart.yaml`; paths are
relative to the repository root, wherever you start it from.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # run from a checkout without installing

from trm.data.build import main as build  # noqa: E402
from trm.train.entry import main as train  # noqa: E402

DATA = "data/sudoku-4x4"


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())  # and nothing else: no data built, no run started
        return 0
    os.chdir(ROOT)
    if (
        not any(a.lstrip("+").startswith(("data_paths=", "data.data_paths=")) for a in argv)
        and not (ROOT / DATA / "test" / "dataset.json").exists()
    ):
        rc = build(["sudoku4x4", "--out", DATA])
        if rc:
            return rc
    return train(["trm/configs/quickstart.yaml", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
