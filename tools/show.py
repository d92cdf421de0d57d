"""Render dataset examples or predictions as text and PNG (see trm/data/show.py for every option).

    python tools/show.py data/sudoku-4x4
    python tools/show.py runs/quickstart/preds.npz --data data/sudoku-4x4 --wrong
"""

import sys

from trm.data.show import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
