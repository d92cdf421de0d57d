"""SLURM through submitit, with the job script rendered from templates/slurm.sh.j2.

    executor = backend_for("slurm").executor(profile, folder, resources, repo_root, job_name="maze.baseline")
    job = executor.submit(TrainJob(run_dir))        # sbatch; "Submitted batch job 4711"

`TrmSlurmExecutor` is submitit's `SlurmExecutor` with one change: the script text. The template
keeps submitit's contract (its log paths `%j_%t_log.*` / `%A_%a_%t_log.*`, `SUBMITIT_EXECUTOR=slurm`,
`--signal=USR2@N` and the `srun ... -m submitit.core._submit FOLDER` line), so job states (sacct),
results, cancel and requeue (`scontrol requeue` from the node) are submitit's own code. States for
tools/status.py come from one sacct call (squeue for what sacct does not list yet or any more).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import typing as tp
from pathlib import Path

from submitit.core import core, utils
from submitit.slurm.slurm import SlurmExecutor, SlurmInfoWatcher, SlurmJob

from trm.hpc.backends.arrays import submit_array
from trm.hpc.backends.base import Backend
from trm.hpc.render import ScriptRequest, render_script
from trm.hpc.scheduler import SchedulerError


class SlurmBackend(Backend):
    name = "slurm"
    display_name = "SLURM"
    template = "slurm.sh.j2"
    script_suffix = "sbatch"
    job_id_env = "SLURM_JOB_ID"
    array_index_env = "SLURM_ARRAY_TASK_ID"
    cancel_command = "scancel"
    multi_node = True

    def new_executor(self, request: ScriptRequest, python: str) -> TrmSlurmExecutor:
        return TrmSlurmExecutor(request.folder, request, max_num_timeout=request.profile.max_num_timeout, python=python)

    def script_context(self, req: ScriptRequest) -> dict[str, object]:
        res, folder = req.resources, str(req.folder)
        tag = "%A_%a" if req.array_size else "%j"  # submitit's JobPaths names, array or not
        return {
            "stdout": f"{folder}/{tag}_0_log.out",
            "stderr": f"{folder}/{tag}_0_log.err",
            "task_stdout": f"{folder}/{tag}_%t_log.out",
            "task_stderr": f"{folder}/{tag}_%t_log.err",
            "mem": f"{int(res.mem_gb)}G" if res.mem_gb == int(res.mem_gb) else f"{math.ceil(res.mem_gb * 1024)}M",
            "array": f"0-{req.array_size - 1}%{req.parallelism}" if req.array_size else "",
        }

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """sacct for all, squeue for what sacct does not list (a just-submitted job; an array element
        cancelled while pending, which Slurm 22.05's sacct drops); neither knows it: GONE."""
        parents = sorted({j.split("_")[0] for j in job_ids})
        proc = self.run(["sacct", "-X", "-o", "JobID,State", "--parsable2", *(f"-j{p}" for p in parents)])
        if proc.returncode != 0:
            raise SchedulerError(f"sacct failed: {proc.stderr.strip()}")
        info = SlurmInfoWatcher().read_info(proc.stdout)
        out = {j: info[j]["State"].split()[0] for j in job_ids if j in info}  # "CANCELLED by 0" -> CANCELLED
        missing = [j for j in job_ids if j not in out]
        if missing:
            missing_parents = ",".join(sorted({j.split("_")[0] for j in missing}))
            queue = self.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", missing_parents])
            listed = dict(line.split("|", 1) for line in queue.stdout.split() if "|" in line)
            out.update({j: listed.get(j, "GONE") for j in missing})
        return out

    def cancel(self, job_ids: list[str]) -> str:
        proc = self.run([self.cancel_command, *job_ids])
        if proc.returncode != 0:
            raise SchedulerError(f"scancel failed: {proc.stderr.strip()}")
        return (proc.stdout + proc.stderr).strip()

    def restart_count(self) -> int:
        count = os.environ.get("SLURM_RESTART_COUNT", "0")
        return int(count) if count.isdigit() else 0

    def stop_kind(self) -> str:
        job_id = os.environ.get(self.job_id_env)
        return stop_kind_of(job_id, self.restart_count()) if job_id else "cancelled"


def stop_kind_of(job_id: str, restart_count: int) -> str:
    """Why this SLURM job's tasks got a TERM, from what the controller says about the job:

    - "requeued": preempted with PreemptMode=REQUEUE and no GraceTime; the controller has already
      counted the restart (`Restarts` above this attempt's SLURM_RESTART_COUNT) and requeues the job.
    - "preempted": preempted with a GraceTime (`PreemptTime` set); a job that ends within its grace
      time is not requeued by the controller, so the job requeues itself.
    - "timeout": the time limit passed before the warning signal did its work (`JobState=TIMEOUT`):
      the job requeues itself as for a time-out, within the profile's budget.
    - "cancelled": anything else (scancel, a kill); also when scontrol cannot be asked.
    """
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "cancelled"
    fields = dict(w.split("=", 1) for w in out.split() if "=" in w)
    if fields.get("JobState") == "TIMEOUT":
        return "timeout"
    restarts = fields.get("Restarts", "0")
    if restarts.isdigit() and int(restarts) > restart_count:
        return "requeued"
    if fields.get("PreemptTime", "None") not in ("None", "Unknown", ""):
        return "preempted"
    return "cancelled"


class TrmSlurmExecutor(SlurmExecutor):
    def __init__(
        self, folder: str | Path, request: ScriptRequest, max_num_timeout: int = 3, python: str | None = None
    ) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout, python=python)
        self.request = request
        res = request.resources
        self.update_parameters(
            job_name=request.job_name,
            time=res.time_min,
            nodes=res.nodes,
            ntasks_per_node=res.ntasks_per_node,
            array_parallelism=request.profile.array_parallelism,
        )

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        req = dataclasses.replace(
            self.request,
            command=command,
            folder=Path(self.folder),
            job_name=str(self.parameters["job_name"]),
            array_size=int(self.parameters.get("map_count") or 0),
            array_parallelism=int(self.parameters["array_parallelism"]),
        )
        return render_script(req)

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[tp.Any]]:
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        # submitit's own array path renders with a plain SlurmExecutor; keep our template instead.
        return submit_array(
            self,
            delayed_submissions,
            lambda first, i: SlurmJob(
                folder=self.folder, job_id=f"{first.job_id}_{i}", tasks=list(range(first.num_tasks))
            ),
        )
