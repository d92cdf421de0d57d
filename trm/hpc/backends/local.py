"""No scheduler: submitit's local executor, each task running the script of templates/local.sh.j2.

    executor = executor_for(folder, profile, resources, repo_root, job_name="quickstart.baseline")
    job = executor.submit(TrainJob(run_dir))        # a detached controller process; job id = its pid

The controller starts one process per task (ranks from SUBMITIT_LOCAL_*), sends USR2 before the
time limit and restarts the tasks when rank 0 exits with submitit's requeue code (the trainer
checkpointed). Jobs run one after another or side by side, as many as are submitted: on a laptop,
submit a sweep as one job after the other with `tools/submit.py --sequential` or use tools/run_queue.py.
"""

from __future__ import annotations

import dataclasses
import shlex
import typing as tp
import uuid
from pathlib import Path

from submitit.core import utils
from submitit.local.local import LocalExecutor, LocalJob, start_controller

from trm.hpc.profile import Profile
from trm.hpc.render import ScriptRequest, render_script
from trm.hpc.spec import Resources


class TrmLocalExecutor(LocalExecutor):
    def __init__(
        self, folder: str | Path, request: ScriptRequest, max_num_timeout: int = 3, python: str | None = None
    ) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout, python=python)
        self.request = request
        res = request.resources
        self.update_parameters(
            timeout_min=res.time_min,
            tasks_per_node=res.ntasks_per_node,
            gpus_per_node=res.gpus_per_node,
            signal_delay_s=request.profile.signal_delay_s,
            name=request.job_name,
        )

    def _submit_command(self, command: str) -> LocalJob[tp.Any]:
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        # The controller re-runs the same script after a requeue, so it stays where it is written.
        script = folder / f"local_{uuid.uuid4().hex}.sh"
        req = dataclasses.replace(
            self.request,
            command=command,
            folder=Path(self.folder),
            job_name=str(self.parameters.get("name", self.request.job_name)),
        )
        script.write_text(render_script(req))
        ntasks = self.parameters.get("tasks_per_node", 1)
        n_gpus = self.parameters.get("gpus_per_node", 0)
        process = start_controller(
            folder=self.folder,
            command=f"bash {shlex.quote(str(script))}",
            tasks_per_node=ntasks,
            cuda_devices=",".join(str(k) for k in range(n_gpus)),
            timeout_min=self.parameters.get("timeout_min", 2.0),
            signal_delay_s=self.parameters.get("signal_delay_s", 30),
        )
        job: LocalJob[tp.Any] = LocalJob(
            folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(ntasks))
        )
        job.paths.folder.mkdir(parents=True, exist_ok=True)
        job.paths.submission_file.unlink(missing_ok=True)
        job.paths.submission_file.symlink_to(script)
        return job


def executor_for(
    folder: Path,
    profile: Profile,
    resources: Resources,
    repo_root: Path,
    job_name: str,
    python: str | None = None,
) -> TrmLocalExecutor:
    from trm.hpc.render import job_python

    python = python or job_python(profile, repo_root)
    request = ScriptRequest(profile, resources, job_name, folder, "", repo_root)
    return TrmLocalExecutor(folder, request, max_num_timeout=profile.max_num_timeout, python=python)
