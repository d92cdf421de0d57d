"""IBM Spectrum LSF as a submitit plugin: backend, executor, job, info watcher and job environment.

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

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing as tp
import uuid
from pathlib import Path

from submitit.core import core, job_environment, utils

from trm.hpc.backends import submitit_private
from trm.hpc.backends.arrays import submit_array
from trm.hpc.backends.base import Backend
from trm.hpc.profile import Profile
from trm.hpc.render import (
    Raw,
    RenderError,
    ScriptRequest,
    job_python,
    render_script,
    submitit_command,
)
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
_LSF_BARE = re.compile(r"^[A-Za-z0-9_.,:/%+@-]+$")


def lsf_job_ref(job_id: str) -> str:
    """submitit's "123_4" (array element) is LSF's "123[4]"."""
    base, _, index = job_id.partition("_")
    return f"{base}[{index}]" if index else base


def lsf_quote(value: object) -> Raw:
    """An LSF directive value: bare when plain, else in double quotes (as LSF's docs and DTU write)."""
    text = str(value)
    if _LSF_BARE.match(text):
        return Raw(text)
    if any(c in text for c in '"$`\\\n\r'):
        raise RenderError(f"cannot write {text!r} into a #BSUB directive (no quotes, $, ` or \\ allowed)")
    return Raw(f'"{text}"')


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


class LsfBackend(Backend):
    name = "lsf"
    display_name = "LSF"
    template = "lsf.sh.j2"
    script_suffix = "bsub"
    job_id_env = "LSB_JOBID"
    array_index_env = "LSB_JOBINDEX"
    cancel_command = "bkill"
    requeue_command = "brequeue"  # from the node, when the profile's lsf_requeue says so (else exit 75 + -Q)

    def new_executor(self, request: ScriptRequest, python: str) -> LsfExecutor:
        prof, res = request.profile, request.resources
        ex = LsfExecutor(
            request.folder,
            max_num_timeout=prof.max_num_timeout,
            python=python,
            profile=prof,
            repo_root=request.repo_root,
        )
        ex.update_parameters(
            job_name=request.job_name,
            time=res.time_min,
            tasks_per_node=res.ntasks_per_node,
            cpus_per_task=res.cpus_per_task,
            gpus_per_node=res.gpus_per_node,
            mem_gb=res.mem_gb,
            queue=res.queue,
            array_parallelism=prof.array_parallelism,
        )
        return ex

    def template_filters(self) -> dict[str, tp.Callable[[object], str]]:
        return {"lsf": lsf_quote}

    def script_context(self, req: ScriptRequest) -> dict[str, object]:
        prof, res, folder = req.profile, req.resources, str(req.folder)
        slots = res.cpus_per_task * res.ntasks_per_node
        mem_gb = res.mem_gb / slots if prof.mem_per_slot else res.mem_gb
        tag = "%J_%I" if req.array_size else "%J"
        array = f"[1-{req.array_size}]%{req.parallelism}" if req.array_size else ""
        return {
            "lsf_job_name": req.job_name + array,
            "slots": slots,
            "rusage": f"rusage[mem={max(1, math.ceil(mem_gb))}GB]",
            "gpu": f"num={res.gpus_per_node}:mode={prof.gpu_mode}" if res.gpus_per_node else "",
            "walltime": _hhmm(res.time_min),
            "warning_min": max(1, math.ceil(prof.signal_delay_s / 60)),
            "stdout": f"{folder}/{tag}_0_log.out",
            "stderr": f"{folder}/{tag}_0_log.err",
            # per-task logs of ranks >= 1, named as submitit's JobPaths expects ("<id>[_<index>]_<task>")
            "task_log_prefix": Raw(
                shlex.quote(folder + "/") + f'"${{{self.job_id_env}}}${{TRM_LSF_INDEX_TAG}}_${{t}}_log"'
            ),
        }

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        parents = sorted({j.split("_")[0] for j in job_ids})
        proc = self.run(["bjobs", "-o", BJOBS_FORMAT, "-noheader", *parents])
        info = LsfInfoWatcher().read_info(proc.stdout)
        gone = {m[1] for m in _NOT_FOUND.finditer(proc.stderr + proc.stdout)}
        out = {j: info[j]["State"] for j in job_ids if j in info}
        out.update({j: "PURGED" for j in job_ids if j not in out and j.split("_")[0] in gone})
        return out

    def cancel(self, job_ids: list[str]) -> str:
        proc = self.run([self.cancel_command, *(lsf_job_ref(j) for j in job_ids)])
        return (proc.stdout + proc.stderr).strip()


class LsfInfoWatcher(core.InfoWatcher):
    def _make_command(self) -> list[str] | None:
        to_check = sorted({x.split("_")[0] for x in submitit_private.unfinished_ids(self)})
        if not to_check:
            return None
        return ["bjobs", "-o", BJOBS_FORMAT, "-noheader", *to_check]

    def update(self) -> None:
        """One bjobs call for every unfinished job; bjobs exits non-zero if any id is unknown, so its
        status is ignored and the ids it reports as not found are marked PURGED (finished) one by one."""
        command = self._make_command()
        if command is None:
            return
        info: dict[str, dict[str, str]] = {}
        purged: dict[str, dict[str, str]] = {}
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            core.logger.get_logger().warning(f"bjobs failed ({e}); job states may be stale")
        else:
            info = self.read_info(proc.stdout)
            registered = submitit_private.registered_ids(self)
            for m in _NOT_FOUND.finditer(proc.stderr + proc.stdout):
                key = m[1] if not m[2] else f"{m[1]}_{m[2]}"
                for job_id in registered:
                    if job_id == key or job_id.split("_")[0] == key:
                        purged.setdefault(job_id, {"State": "PURGED", "LsfState": "not found"})
        submitit_private.record_update(self, info, if_missing=purged)

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
    _cancel_command = LsfBackend.cancel_command
    watcher = LsfInfoWatcher(delay_s=60)

    def cancel(self, check: bool = True) -> None:
        (subprocess.check_call if check else subprocess.call)([self._cancel_command, lsf_job_ref(self.job_id)])

    def _interrupt(self, timeout: bool = False) -> None:
        """Send the preemption (TERM then the warning signal) or time-out (warning signal) signals."""
        ref = lsf_job_ref(self.job_id)
        if not timeout:
            subprocess.check_call([self._cancel_command, "-s", "TERM", ref])
        subprocess.check_call([self._cancel_command, "-s", LsfJobEnvironment.USR_SIG, ref])


class LsfJobEnvironment(job_environment.JobEnvironment):
    _env = {
        "job_id": LsfBackend.job_id_env,
        "num_tasks": "TRM_LSF_NTASKS",
        "num_nodes": "TRM_LSF_NNODES",  # never set: one host
        "node": "TRM_LSF_NODEID",  # never set: node 0
        "global_rank": "TRM_LSF_LOCAL_RANK",
        "local_rank": "TRM_LSF_LOCAL_RANK",
    }

    @property
    def array_job_id(self) -> str | None:
        index = os.environ.get(LsfBackend.array_index_env, "0")
        return os.environ.get(LsfBackend.job_id_env) if index not in ("", "0") else None

    @property
    def array_task_id(self) -> str | None:
        index = os.environ.get(LsfBackend.array_index_env, "0")
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
            subprocess.check_call([LsfBackend.requeue_command, lsf_job_ref(self.job_id)], timeout=60)
        sys.exit(EXIT_REQUEUE)


# The lowest value each numeric parameter takes (what a script can ask LSF for).
_LOWEST = {
    "time": 1,
    "tasks_per_node": 0,
    "cpus_per_task": 1,
    "gpus_per_node": 0,
    "array_parallelism": 0,
    "map_count": 0,
}


def _check_parameter(key: str, value: object) -> None:
    """One executor parameter, checked the way the script will print it (without rendering it)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if key in _LOWEST and not (number and value >= _LOWEST[key]):  # type: ignore[operator]
        raise ValueError(f"LSF executor: {key} must be a number >= {_LOWEST[key]}, got {value!r}")
    if key == "mem_gb" and not (number and value > 0):  # type: ignore[operator]
        raise ValueError(f"LSF executor: mem_gb must be a positive number of GB, got {value!r}")
    if key in ("job_name", "queue") and value:
        lsf_quote(value)  # raises RenderError (a ValueError) for what a #BSUB line cannot hold


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
        for key, value in kwargs.items():
            _check_parameter(key, value)  # refuse bad values now, not at submission
        self.parameters.update(kwargs)

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
        """The script, rendered once per bsub."""
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
