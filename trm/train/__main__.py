"""`python -m trm.train CONFIG.yaml [key=value ...]`: the trainer's command line (trm.train.entry)."""

import sys

from trm.train.entry import main

if __name__ == "__main__":
    sys.exit(main())
