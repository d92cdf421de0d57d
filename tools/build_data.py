"""Build a dataset under data/ (see trm/data/build.py for every dataset and option).

    python tools/build_data.py sudoku4x4
    python tools/build_data.py --help
"""

import sys

from trm.data.build import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
