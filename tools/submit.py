"""Put a sweep on the cluster (or this machine): one command from a login node.

    python tools/submit.py jobs/maze_ablations.yaml                       # the spec's profile
    python tools/submit.py jobs/maze_ablations.yaml --profile env/dtu-lsf.yaml
    python tools/submit.py jobs/maze_ablations.yaml --dry-run             # write the scripts, print where
    python tools/submit.py jobs/maze_ablations.yaml --run baseline --run no_ema
    python tools/submit.py jobs/maze_ablations.yaml --skip-existing       # only runs that do not exist yet
    python tools/submit.py jobs/maze_ablations.yaml --resume              # + failed/cancelled runs
    python tools/submit.py jobs/maze_ablations.yaml --cancel              # cancel what is queued or running
    python tools/submit.py jobs.txt --profile env/slurm-generic.yaml --gpus 1 --time 24:00:00

Runs already on disk are never overwritten: without --skip-existing/--resume the command refuses
and names them. With a scheduler, several runs go out as job arrays; with `--profile local`
(no scheduler) they train one after another here. `tools/status.py SPEC` shows where they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from trm.hpc.jobs_file import JobsFileError, jobs_sweep, mark_submitted  # noqa: E402
from trm.hpc.profile import Profile, ProfileError, load_profile  # noqa: E402
from trm.hpc.render import RenderError  # noqa: E402
from trm.hpc.scheduler import SchedulerError  # noqa: E402
from trm.hpc.spec import (  # noqa: E402
    Resources,
    SpecError,
    Sweep,
    check_resource,
    check_resources,
    find_repo_root,
    load_sweep,
)
from trm.hpc.status import settle_jobs_file  # noqa: E402
from trm.hpc.submit import SubmitError, cancel_sweep, dry_run, submit_sweep  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="a sweep spec (jobs/*.yaml) or a jobs.txt")
    p.add_argument("--profile", help="cluster profile (env/*.yaml or 'local'); default: the spec's")
    p.add_argument("--runs-root", help="where <sweep>/<run> directories go (default: the profile's, else runs/)")
    p.add_argument("--run", action="append", default=[], metavar="NAME", help="only this run (repeatable)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--skip-existing", action="store_true", help="leave existing runs alone, submit new ones")
    mode.add_argument(
        "--resume",
        action="store_true",
        help="also resubmit failed/cancelled runs; they continue from their checkpoints",
    )
    mode.add_argument("--cancel", action="store_true", help="cancel the sweep's queued and running jobs")
    mode.add_argument("--dry-run", action="store_true", help="write the job scripts and print where; submit nothing")
    p.add_argument(
        "--out",
        help="folder for --dry-run scripts (default: <runs_root>/<sweep>/dry-run, or ./dry-run/<sweep> when "
        "the runs root is not on this machine)",
    )
    p.add_argument("--no-array", action="store_true", help="one job per run instead of job arrays")
    p.add_argument("--no-data-check", action="store_true", help="do not check that the datasets exist here")
    res = p.add_argument_group("resources (override the spec's; the only source for a jobs.txt)")
    res.add_argument("--gpus", type=int, help="GPUs per node")
    res.add_argument("--cpus", type=int, help="CPUs per task")
    res.add_argument("--mem-gb", type=float, help="memory per node in GB")
    res.add_argument("--time", help="time limit, e.g. 24:00:00 or minutes")
    res.add_argument("--queue", help="queue (LSF) or partition (SLURM)")
    return p.parse_args(argv)


_OPTIONS = {
    "gpus_per_node": "--gpus",
    "cpus_per_task": "--cpus",
    "mem_gb": "--mem-gb",
    "time": "--time",
    "queue": "--queue",
}


def _resources(base: Resources, args: argparse.Namespace, profile: Profile) -> Resources:
    """The spec's resources with the command line's on top, each checked as a spec's would be."""
    changes = {}
    for key, option in _OPTIONS.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value is not None:
            changes[key] = check_resource(key, value, option, profile)
    return check_resources(dataclasses.replace(base, **changes), "command line", profile)


def _load(args: argparse.Namespace) -> tuple[Sweep, dict]:
    path = Path(args.spec)
    if path.suffix == ".txt":
        if not args.profile:
            raise SpecError(f"{path}: a jobs.txt has no profile; pass --profile env/<cluster>.yaml (or local)")
        profile = load_profile(args.profile, find_repo_root(path.resolve().parent))
        sweep, lines = jobs_sweep(path, profile, _resources(Resources(), args, profile), args.runs_root)
        return sweep, lines
    sweep = load_sweep(path, runs_root=args.runs_root, profile=args.profile)
    sweep.resources = _resources(sweep.resources, args, sweep.profile)
    return sweep, {}


def _dry_run_folder(sweep: Sweep) -> Path:
    """<runs_root>/<sweep>/dry-run where the runs root exists here; else ./dry-run/<sweep>, so that a
    dry run for a cluster's paths (/work3/$USER/...) creates nothing of them on this machine."""
    return sweep.dir / "dry-run" if sweep.runs_root.is_dir() else Path("dry-run") / sweep.name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sweep, lines = _load(args)
        runs = [sweep.run(name) for name in args.run] if args.run else sweep.runs
        if not runs:
            print(f"{args.spec}: no runs to submit (a jobs.txt submits only its pending '[ ]' lines)")
            return 0
        if args.cancel:
            cancel_sweep(sweep, runs)
            return 0
        if args.dry_run:
            out = Path(args.out) if args.out else _dry_run_folder(sweep)
            paths = dry_run(sweep, runs, out, array=not args.no_array)
            print(
                f"{len(paths)} {sweep.profile.scheduler} script(s) for {len(runs)} run(s) of {sweep.name} "
                f"written to {out}:"
            )
            for p in paths:
                print(f"  {p}")
            return 0
        existing = "resume" if args.resume else "skip" if args.skip_existing else "refuse"
        result = submit_sweep(
            sweep, runs, existing=existing, array=not args.no_array, data_check=not args.no_data_check
        )
        if lines and result.submitted:
            mark_submitted(
                Path(args.spec),
                {lines[name]: f"{sweep.profile.scheduler}:{job}" for name, job in result.submitted.items()},
            )
            # Runs that ended already (all of them with the local profile): their lines say how.
            _, marked = jobs_sweep(Path(args.spec), sweep.profile, sweep.resources, args.runs_root, ("running",))
            settle_jobs_file(Path(args.spec), sweep, {k: v for k, v in marked.items() if k in result.submitted})
        counts = f"{len(result.submitted)} submitted, {len(result.skipped)} skipped"
        print(f"{sweep.name}: {counts}" + (f", {len(result.failed)} failed" if result.failed else ""))
        print(
            f"status: python tools/status.py {shlex.quote(args.spec)}"
            + (f" --profile {shlex.quote(args.profile)}" if args.profile else "")
            + (f" --runs-root {shlex.quote(args.runs_root)}" if args.runs_root else "")
        )
        return 1 if result.failed else 0
    except (SpecError, ProfileError, JobsFileError, SubmitError, RenderError, SchedulerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
