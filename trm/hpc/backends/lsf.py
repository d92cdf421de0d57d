"""IBM Spectrum LSF as a submitit plugin: executor, job, info watcher and job environment.

    executor = LsfExecutor("runs/maze/logs", profile=load_profile("env/dtu-lsf.yaml"))
    executor.update_parameters(name="maze.baseline", timeout_min=1440, gpus_per_node=1, queue="gpuv100")
    job = executor.submit(fn)                  # `bsub < script`, "Job <123> is submitted to queue <gpuv100>."

Registered through the `submitit` entry-point group (executor / job_environment), so that
`submitit.AutoExecutor(cluster="lsf")` finds it and, on the node, `submitit.JobEnvironment()` knows
an LSF job. The script comes from templates/lsf.sh.j2: it starts one process per rank (ranks from
`TRM_LSF_LOCAL_RANK`, hosts from `LSB_HOSTS`), forwards the warning signal (`-wa USR2 -wt N`) and
exits with the trainer's requeue code, which `-Q 75` turns into a requeue (or calls `brequeue`).
Status comes from one `bjobs -o ... -noheader` call for all jobs; suspended jobs (PSUSP, USUSP, SSUSP)
count as alive, and an id LSF has purged ("Job <id> is not found") does not blank the others.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import typing as tp
import uuid
from pathlib import Path

from submitit.core import core, job_environment, utils

from trm.hpc.backends.arrays import submit_array
from trm.hpc.profile import Profile
from trm.hpc.render import ScriptRequest, render_script
from trm.hpc.scheduler import ALIVE
from trm.hpc.spec import Resources
from trm.rundir import EXIT_REQUEUE

# LSF state -> submitit state. PSUSP/USUSP/SSUSP are jobs LSF will resume: alive, not finished.
LSF_STATES = {
    "PEND": "PENDING",
    "WAIT": "PENDING",
    "PSUSP": "SUSPENDED",
    "RUN": "RUNNING",
    "USUSP": "SUSPENDED",
    "SSUSP": "SUSPENDED",
    "PROV": "PENDING",
    "DONE": "COMPLETED",
    "POST_DONE": "COMPLETED",
    "EXIT": "FAILED",
    "POST_ERR": "FAILED",
    "ZOMBI": "FAILED",
    "UNKWN": "UNKNOWN",
}
BJOBS_FORMAT = "jobid jobindex stat exit_code delimiter='|'"
_NOT_FOUND = re.compile(r"Job <(\d+)(?:\[(\d+)\])?> is not found")
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to (?:default )?queue <([^>]*)>")
DEFAULT_PROFILE = Profile(name="lsf", scheduler="lsf", venv="")


def lsf_job_ref(job_id: str) -> str:
    """submitit's "123_4" (array element) is LSF's "123[4]"."""
    base, _, index = job_id.partition("_")
    return f"{base}[{index}]" if index else base


class LsfInfoWatcher(core.InfoWatcher):
    def _make_command(self) -> list[str] | None:
        to_check = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not to_check:
            return None
        return ["bjobs", "-o", BJOBS_FORMAT, "-noheader", *to_check]

    def update(self) -> None:
        """One bjobs call for every unfinished job; bjobs exits non-zero if any id is unknown, so its
        status is ignored and the ids it reports as not found are marked PURGED (finished) one by one."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            core.logger.get_logger().warning(f"bjobs failed ({e}); job states may be stale")
        else:
            self._info_dict.update(self.read_info(proc.stdout))
            for m in _NOT_FOUND.finditer(proc.stderr + proc.stdout):
                key = m[1] if not m[2] else f"{m[1]}_{m[2]}"
                for job_id in self._registered:
                    if job_id == key or job_id.split("_")[0] == key:
                        self._info_dict.setdefault(job_id, {"State": "PURGED", "LsfState": "not found"})
        self._last_status_check = core._time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if isinstance(string, bytes):
            string = string.decode()
        info: dict[str, dict[str, str]] = {}
        for line in string.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            job_id, index, stat, exit_code = parts
            key = job_id if index in ("0", "", "-") else f"{job_id}_{index}"
            info[key] = {
                "State": LSF_STATES.get(stat, "UNKNOWN"),
                "LsfState": stat,
                "ExitCode": "" if exit_code == "-" else exit_code,
            }
        return info

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode=mode).get("State") or "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper() not in ALIVE


class LsfJob(core.Job[core.R]):
    _cancel_command = "bkill"
    watcher = LsfInfoWatcher(delay_s=60)

    def cancel(self, check: bool = True) -> None:
        (subprocess.check_call if check else subprocess.call)(["bkill", lsf_job_ref(self.job_id)], shell=False)

    def _interrupt(self, timeout: bool = False) -> None:
        """Send the preemption (TERM then the warning signal) or time-out (warning signal) signals."""
        ref = lsf_job_ref(self.job_id)
        if not timeout:
            subprocess.check_call(["bkill", "-s", "TERM", ref])
        subprocess.check_call(["bkill", "-s", LsfJobEnvironment.USR_SIG, ref])


class LsfJobEnvironment(job_environment.JobEnvironment):
    _env = {
        "job_id": "LSB_JOBID",
        "num_tasks": "TRM_LSF_NTASKS",
        "num_nodes": "TRM_LSF_NNODES",  # never set: one host
        "node": "TRM_LSF_NODEID",  # never set: node 0
        "global_rank": "TRM_LSF_LOCAL_RANK",
        "local_rank": "TRM_LSF_LOCAL_RANK",
    }

    @property
    def array_job_id(self) -> str | None:
        index = os.environ.get("LSB_JOBINDEX", "0")
        return os.environ.get("LSB_JOBID") if index not in ("", "0") else None

    @property
    def array_task_id(self) -> str | None:
        index = os.environ.get("LSB_JOBINDEX", "0")
        return index if index not in ("", "0") else None

    @property
    def hostnames(self) -> list[str]:
        hosts = os.environ.get("LSB_HOSTS", "").split()  # one name per slot
        if not hosts:
            words = os.environ.get("LSB_MCPU_HOSTS", "").split()  # "hostA 4 hostB 4"
            hosts = words[::2]
        return list(dict.fromkeys(hosts)) or [self.hostname]

    def _requeue(self, countdown: int) -> None:
        """Requeue this job (or array element): exit with the code `-Q` lists, or call brequeue."""
        core.logger.get_logger().info(f"Requeueing LSF job {self.job_id} ({countdown} timeouts left)")
        if os.environ.get("TRM_LSF_REQUEUE") == "brequeue":
            subprocess.check_call(["brequeue", lsf_job_ref(self.job_id)], timeout=60)
        sys.exit(EXIT_REQUEUE)


class LsfExecutor(core.PicklingExecutor):
    """Submits through `bsub < script`, the script rendered from templates/lsf.sh.j2.

    Parameters (update_parameters): job_name, time (minutes), nodes (1), tasks_per_node,
    cpus_per_task, gpus_per_node, mem_gb, queue, array_parallelism; the site's settings (modules,
    venv, scratch, GPU mode, warning time, requeue style) come from `profile`.
    """

    job_class = LsfJob

    def __init__(
        self,
        folder: str | Path,
        max_num_timeout: int = 3,
        max_pickle_size_gb: float = 1.0,
        python: str | None = None,
        profile: Profile | None = None,
        repo_root: str | Path | None = None,
    ):
        super().__init__(folder, max_num_timeout=max_num_timeout, max_pickle_size_gb=max_pickle_size_gb)
        self.profile = profile or DEFAULT_PROFILE
        self.repo_root = Path(repo_root or Path.cwd()).resolve()
        from trm.hpc.render import job_python

        self.python = python or job_python(self.profile, self.repo_root)
        self.parameters = {
            "job_name": "submitit",
            "time": 60,
            "nodes": 1,
            "tasks_per_node": 1,
            "cpus_per_task": 1,
            "gpus_per_node": 0,
            "mem_gb": 4.0,
            "queue": "",
            "array_parallelism": 0,
        }
        if self.affinity() < 0:
            raise RuntimeError('Could not find "bsub"; is this an LSF login node?')

    @classmethod
    def affinity(cls) -> int:
        return -1 if shutil.which("bsub") is None else 2

    @classmethod
    def _equivalence_dict(cls) -> core.EquivalenceDict:
        return {
            "name": "job_name",
            "timeout_min": "time",
            "mem_gb": "mem_gb",
            "nodes": "nodes",
            "cpus_per_task": "cpus_per_task",
            "gpus_per_node": "gpus_per_node",
            "tasks_per_node": "tasks_per_node",
        }

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return {
            "job_name",
            "time",
            "nodes",
            "tasks_per_node",
            "cpus_per_task",
            "gpus_per_node",
            "mem_gb",
            "queue",
            "array_parallelism",
            "map_count",
        }

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        invalid = sorted(set(kwargs) - self._valid_parameters())
        if invalid:
            raise ValueError(
                f"Unavailable parameter(s) {invalid} for the LSF executor; valid ones: "
                f"{', '.join(sorted(self._valid_parameters()))}"
            )
        if kwargs.get("nodes", 1) != 1:
            raise ValueError("the LSF backend runs single-host jobs only (nodes=1); ranks use that host's GPUs")
        self.parameters.update(kwargs)
        self._render("validation only")  # refuse bad values now, not at submission

    def _resources(self) -> Resources:
        p = self.parameters
        return Resources(
            nodes=1,
            gpus_per_node=int(p["gpus_per_node"]),
            cpus_per_task=int(p["cpus_per_task"]),
            mem_gb=float(p["mem_gb"]),
            time=str(int(p["time"])),
            tasks_per_node=int(p["tasks_per_node"]),
            queue=str(p["queue"] or ""),
        )

    def _render(self, command: str) -> str:
        req = ScriptRequest(
            self.profile,
            self._resources(),
            str(self.parameters["job_name"]),
            self.folder,
            command,
            self.repo_root,
            array_size=int(self.parameters.get("map_count") or 0),
            array_parallelism=int(self.parameters["array_parallelism"] or 0),
        )
        return render_script(req)

    @property
    def _submitit_command_str(self) -> str:
        from trm.hpc.render import submitit_command

        return submitit_command(self.python, self.folder)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return self._render(command)

    def _num_tasks(self) -> int:
        return max(1, int(self.parameters["tasks_per_node"]))

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["bsub"]  # the script goes to stdin: bsub reads #BSUB lines only from there

    def _submit_command(self, command: str) -> core.Job[tp.Any]:
        tmp_uuid = uuid.uuid4().hex
        path = utils.JobPaths.get_first_id_independent_folder(self.folder) / f".submission_file_{tmp_uuid}.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._make_submission_file_text(command, tmp_uuid))
        with path.open() as script:
            proc = subprocess.run(["bsub"], stdin=script, capture_output=True, text=True)
        if proc.returncode != 0 or not _SUBMITTED.search(proc.stdout):
            raise utils.FailedJobError(
                f"bsub refused the job (exit {proc.returncode}): {(proc.stderr + proc.stdout).strip()}"
            )
        job_id = self._get_job_id_from_submission_command(proc.stdout)
        job: core.Job[tp.Any] = self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(path, "submission_file", keep_as_symlink=True)
        return job

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        """ "Job <123> is submitted to queue <gpuv100>." (bsub may print other lines first)."""
        if isinstance(string, bytes):
            string = string.decode()
        m = _SUBMITTED.search(string)
        if m is None:
            raise utils.FailedSubmissionError(f'Could not make sense of bsub output "{string}"')
        return m[1]

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[tp.Any]]:
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        # An array: one bsub with -J "name[1-N]%P"; element i (1-based) runs submission i-1.
        tasks = list(range(self._num_tasks()))
        return submit_array(
            self,
            delayed_submissions,
            lambda first, i: LsfJob(folder=self.folder, job_id=f"{first.job_id}_{i + 1}", tasks=tasks),
        )


def executor_for(
    folder: Path,
    profile: Profile,
    resources: Resources,
    repo_root: Path,
    job_name: str,
    python: str | None = None,
) -> LsfExecutor:
    ex = LsfExecutor(
        folder, max_num_timeout=profile.max_num_timeout, python=python, profile=profile, repo_root=repo_root
    )
    ex.update_parameters(
        job_name=job_name,
        time=resources.time_min,
        tasks_per_node=resources.ntasks_per_node,
        cpus_per_task=resources.cpus_per_task,
        gpus_per_node=resources.gpus_per_node,
        mem_gb=resources.mem_gb,
        queue=resources.queue,
        array_parallelism=profile.array_parallelism,
    )
    return ex
