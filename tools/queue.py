"""Run the pending lines of a jobs.txt on this machine; several runners can share one file.

    python tools/queue.py jobs.txt                 # run pending lines one after another
    python tools/queue.py jobs.txt --gpu 0 &       # one runner per GPU, all on the same file
    python tools/queue.py jobs.txt --gpu 1 &
    python tools/queue.py jobs.txt --once          # just the next pending line

jobs.txt: one command a line, `[ ]` pending, `[-] ... [host:pid]` running, `[x]` done, `[!] ... [exit N]`
failed, `#` comments (see trm/hpc/jobs_file.py). Commands run with bash in the file's folder. A line
whose runner died is picked up again; a training that checkpointed on a signal (exit 75) too.
To send the pending lines to a cluster instead: python tools/submit.py jobs.txt --profile env/X.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trm.hpc.jobs_file import JobsFileError  # noqa: E402
from trm.hpc.queue import QueueRunner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("jobs", help="the jobs file, e.g. jobs.txt")
    p.add_argument("--gpu", help="CUDA_VISIBLE_DEVICES for the commands of this runner (e.g. 0, or 0,1)")
    p.add_argument("--once", action="store_true", help="run one pending line, then stop")
    args = p.parse_args(argv)
    path = Path(args.jobs)
    if not path.is_file():
        print(f"error: jobs file '{path}' does not exist", file=sys.stderr)
        return 2
    try:
        failed = QueueRunner(path, gpu=args.gpu).run(once=args.once)
    except JobsFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
