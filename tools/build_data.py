"""Build a dataset under data/ (see trm/data/build.py for every dataset and option).

python tools/build_data.py sudoku4x4
python tools/build_data.py --help
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing
    from trm.data.build import main

    sys.exit(main(sys.argv[1:]))
