"""Where the runs of a sweep are: one line per run.

    python tools/status.py jobs/maze_ablations.yaml
    python tools/status.py jobs/maze_ablations.yaml --profile env/dtu-lsf.yaml --json
    python tools/status.py jobs.txt --profile env/slurm-generic.yaml     # also marks ended lines [x]/[!]
    python tools/status.py runs/maze_ablations/                          # a folder of run directories
    python tools/status.py runs/maze_ablations/baseline                  # one run directory

Columns: run, state (not submitted, pending, running, requeued, suspended, done, failed, cancelled;
with "preempted xN" / "timed out xN" when the run survived those), step/total, epoch, the sweep's
metric from the run's summary.json, job ids, the newest log. Runs whose job vanished without saying
so (killed, cancelled by hand) show as failed/cancelled, with the scheduler's word below the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from trm.hpc.jobs_file import JobsFileError, jobs_sweep  # noqa: E402
from trm.hpc.profile import ProfileError, load_profile  # noqa: E402
from trm.hpc.spec import Resources, SpecError, find_repo_root, load_sweep  # noqa: E402
from trm.hpc.status import folder_sweep, format_table, settle_jobs_file, sweep_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="a sweep spec (jobs/*.yaml), a jobs.txt, a runs/<sweep>/ folder or a run folder")
    p.add_argument("--profile", help="cluster profile (default: the spec's; for a jobs.txt or a folder: local)")
    p.add_argument("--runs-root", help="where <sweep>/<run> directories are (default: the profile's, else runs/)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.add_argument("--no-scheduler", action="store_true", help="read only the run directories")
    args = p.parse_args(argv)
    try:
        path = Path(args.spec)
        root = find_repo_root(path.resolve().parent)
        if path.is_dir():
            sweep = folder_sweep(path, load_profile(args.profile, root) if args.profile else None)
            rows = sweep_rows(sweep, query_scheduler=not args.no_scheduler)
        elif path.suffix == ".txt":
            # Each run's status.json names the scheduler it went to; the profile only places runs_root.
            profile = load_profile(args.profile or "local", root)
            sweep, lines = jobs_sweep(
                path, profile, Resources(), args.runs_root, states=("pending", "running", "done", "failed")
            )
            rows = sweep_rows(sweep, query_scheduler=not args.no_scheduler)
            settle_jobs_file(path, sweep, lines, rows)
        else:
            sweep = load_sweep(path, runs_root=args.runs_root, profile=args.profile)
            rows = sweep_rows(sweep, query_scheduler=not args.no_scheduler)
    except (SpecError, ProfileError, JobsFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict()))
    else:
        print(f"sweep {sweep.name} ({sweep.profile.name}, {len(rows)} runs, {sweep.dir})")
        print(format_table(rows, sweep.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
