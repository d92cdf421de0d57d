"""Run the pending lines of a jobs.txt on this machine; several runners can share one file.

    python tools/run_queue.py jobs.txt                 # run pending lines one after another
    python tools/run_queue.py jobs.txt --gpu 0 &       # one runner per GPU, all on the same file
    python tools/run_queue.py jobs.txt --gpu 1 &
    python tools/run_queue.py jobs.txt --once          # just the next pending line

jobs.txt: one command a line, `[ ]` pending, `[-] ... [host:pid]` running, `[x]` done, `[!] ... [exit N]`
failed, `#` comments (see trm/hpc/jobs_file.py). Commands run with bash in the file's folder. A line
whose runner died is picked up again; a training that checkpointed on a signal (exit 75) too.
Writers of the file take the lock `jobs.txt.lock` beside it: an empty file that stays (leave it).
To send the pending lines to a cluster instead: python tools/submit.py jobs.txt --profile env/X.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing
    from trm.hpc.queue import cli

    sys.exit(cli(__doc__))
