"""Render dataset examples or predictions as text and PNG (see trm/data/show.py for every option).

python tools/show.py data/sudoku-4x4
python tools/show.py runs/quickstart/preds.npz --data data/sudoku-4x4 --wrong
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing
    from trm.data.show import main

    sys.exit(main(sys.argv[1:]))
