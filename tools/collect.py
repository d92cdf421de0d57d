"""Collect sweeps into results/<sweep>.csv, a printed table, optional Markdown, and PNG plots.

    python tools/collect.py jobs/maze_ablations.yaml                  # a sweep spec (runs under runs/)
    python tools/collect.py runs/maze_ablations/ --baseline baseline  # a folder of run directories
    python tools/collect.py runs/maze_ablations/baseline              # one run directory
    python tools/collect.py jobs.txt                                  # the runs a jobs.txt submitted
    python tools/collect.py jobs/a.yaml jobs/b.yaml --markdown        # several sweeps, + results/<sweep>.md
    python tools/collect.py jobs/a.yaml --append results/all.csv      # merge into a shared file (locked)
    python tools/collect.py jobs/a.yaml --wandb                       # also `wandb sync` offline wandb runs

Exit status: 0 collected (damaged runs are listed in the `problems` column and as warnings),
1 `--wandb` sync failed (the CSV and plots are written anyway), 2 bad input.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing
    from trm.hpc.collect import main

    sys.exit(main())
