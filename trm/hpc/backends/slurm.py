"""SLURM through submitit, with the job script rendered from templates/slurm.sh.j2.

    executor = executor_for(folder, profile, resources, repo_root, job_name="maze.baseline")
    job = executor.submit(TrainJob(run_dir))        # sbatch; "Submitted batch job 4711"

`TrmSlurmExecutor` is submitit's `SlurmExecutor` with one change: the script text. The template
keeps submitit's contract (its log paths `%j_%t_log.*` / `%A_%a_%t_log.*`, `SUBMITIT_EXECUTOR=slurm`,
`--signal=USR2@N` and the `srun ... -m submitit.core._submit FOLDER` line), so job states (sacct),
results, cancel and requeue (`scontrol requeue` from the node) are submitit's own code.
"""

from __future__ import annotations

import dataclasses
import typing as tp
from pathlib import Path

from submitit.core import core, utils
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

from trm.hpc.backends.arrays import submit_array
from trm.hpc.profile import Profile
from trm.hpc.render import ScriptRequest, render_script
from trm.hpc.spec import Resources


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


def executor_for(
    folder: Path,
    profile: Profile,
    resources: Resources,
    repo_root: Path,
    job_name: str,
    python: str | None = None,
) -> TrmSlurmExecutor:
    from trm.hpc.render import job_python

    python = python or job_python(profile, repo_root)
    request = ScriptRequest(profile, resources, job_name, folder, "", repo_root)
    return TrmSlurmExecutor(folder, request, max_num_timeout=profile.max_num_timeout, python=python)
