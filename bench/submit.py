"""Benchmark the cluster layer against a real local SLURM: submitting sweeps and refreshing status.

    sudo .ci/install-slurm.sh          # once: munge, slurmctld, slurmd, slurmdbd, mariadb
    python bench/submit.py             # starts a private SLURM cluster, measures, stops it

Prints the time to render and submit a 100-run sweep as one job array and one job at a time, and
the cost of one status refresh (`tools/status.py`) over 1000 runs. Targets: 100 runs as an array in
under 5 s; a refresh over 1000 runs in under 2 s. Jobs are submitted held (`--hold`) and cancelled
afterwards, so nothing trains: what is measured is spec loading, config freezing, rendering,
pickling and sbatch, as on a login node.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)
sys.path.insert(1, str(REPO / "tests"))

from slurm_cluster import LocalSlurm, slurm_installed  # noqa: E402

from trm.hpc.scheduler import cancel_jobs  # noqa: E402
from trm.hpc.spec import load_sweep  # noqa: E402
from trm.hpc.status import sweep_rows  # noqa: E402
from trm.hpc.submit import submit_sweep  # noqa: E402
from trm.rundir import update_status  # noqa: E402


def write_spec(root: Path, name: str, num_runs: int) -> Path:
    profile = root / "bench-slurm.yaml"
    profile.write_text("scheduler: slurm\nqueue: debug\nvenv: ''\narray_limit: 1000\nextra_directives: [--hold]\n")
    spec = root / f"{name}.yaml"
    seeds = ", ".join(str(i) for i in range(num_runs))
    spec.write_text(
        f"name: {name}\nconfig: {REPO / 'trm/configs/quickstart.yaml'}\nprofile: {profile}\n"
        f"resources: {{time: 10, cpus_per_task: 1, mem_gb: 0.1}}\ngrid: {{seed: [{seeds}]}}\n"
    )
    return spec


def timed(label: str, fn, target: float | None = None):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    value = fn()
    took = time.perf_counter() - start
    verdict = "" if target is None else f"  (target < {target:g} s: {'met' if took < target else 'MISSED'})"
    print(f"{label:<58} {took:7.2f} s{verdict}")
    return value


def main() -> int:
    missing = slurm_installed()
    if missing or os.geteuid() != 0:
        print(
            f"bench/submit.py needs the local SLURM packages and root ({missing or 'not root'}); "
            "run .ci/install-slurm.sh first",
            file=sys.stderr,
        )
        return 2
    root = Path(tempfile.mkdtemp(prefix="trm-bench-submit-"))
    cluster = timed("start a local SLURM cluster (munge, mariadb, slurmdbd, ctld, d)", LocalSlurm.start_new)
    os.environ.update(cluster.env)
    os.environ["PYTHONPATH"] = str(REPO)
    quiet = lambda _: None  # noqa: E731
    try:
        ids: list[str] = []
        sweep = timed(
            "load + validate a 100-run spec",
            lambda: load_sweep(write_spec(root, "array100", 100), runs_root=root / "runs"),
        )
        result = timed(
            "render + submit 100 runs as one array",
            lambda: submit_sweep(sweep, data_check=False, say=quiet),
            target=5,
        )
        ids += result.submitted.values()
        sweep = load_sweep(write_spec(root, "single100", 100), runs_root=root / "runs")
        result = timed(
            "render + submit 100 runs one job at a time",
            lambda: submit_sweep(sweep, array=False, data_check=False, say=quiet),
        )
        ids += result.submitted.values()

        big = timed(
            "load + validate a 1000-run spec",
            lambda: load_sweep(write_spec(root, "status1000", 1000), runs_root=root / "runs"),
        )
        result = timed("render + submit 1000 runs as one array", lambda: submit_sweep(big, data_check=False, say=quiet))
        ids += result.submitted.values()
        for i, run in enumerate(big.runs):  # what a running sweep leaves: progress and a metric
            update_status(run.run_dir, state="running", attempts=1)
            (run.run_dir / "summary.json").write_text(
                json.dumps(
                    {
                        "state": "running",
                        "step": i,
                        "total_steps": 1000,
                        "epoch": i / 10,
                        "final": {"eval/exact_accuracy": i / 1000},
                    }
                )
            )
        rows = timed("status refresh over 1000 runs (files + one sacct)", lambda: sweep_rows(big), target=2)
        assert len(rows) == 1000 and rows[-1].metric == 0.999
        timed("status refresh over 1000 runs, files only", lambda: sweep_rows(big, query_scheduler=False))
        timed("cancel 1200 held jobs (one scancel)", lambda: cancel_jobs(big.profile, ids))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
