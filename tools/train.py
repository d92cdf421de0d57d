#!/usr/bin/env python
"""Train a TRM: `python tools/train.py CONFIG.yaml [key=value ...]` (see trm/train/entry.py)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing
    from trm.train.entry import main

    sys.exit(main())
