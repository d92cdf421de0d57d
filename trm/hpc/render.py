"""Job scripts from `templates/<scheduler>.sh.j2`, through one pure function.

    text = render_script(ScriptRequest(profile, resources, job_name="maze", folder=logs,
                                       command=submitit_command(python, logs), repo_root=repo))

Every `{{ value }}` a template prints is shell-quoted (`shlex.quote`) unless the render code marked it
`Raw` after building it from quoted parts (the submitit command line, LSF's double-quoted
directive values). The only text that goes into a script verbatim is what a profile writes as shell
on purpose (`setup` lines and `extra_directives`). A value with a newline is refused: it would end a
directive early. Profiles cannot carry secrets (see `trm.hpc.profile`), and nothing from the
submitting shell's environment is copied into a script.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from trm.hpc.profile import Profile
from trm.hpc.spec import Resources
from trm.rundir import EXIT_REQUEUE

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
PREEMPT_SIGNAL = "USR2"  # submitit's default (SUBMITIT_PREEMPT_SIGNAL); NCCL-safe, unlike USR1


class RenderError(ValueError):
    """A value that cannot be written into a job script safely."""


class Raw(str):
    """Text already safe for the shell (built from quoted parts); printed as is."""


def _finalize(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError(f"refusing to write a value with a line break into a job script: {text!r}")
    return text if isinstance(value, Raw) else shlex.quote(text)


_LSF_BARE = re.compile(r"^[A-Za-z0-9_.,:/%+@-]+$")


def lsf_quote(value: object) -> Raw:
    """An LSF directive value: bare when plain, else in double quotes (as LSF's docs and DTU write)."""
    text = str(value)
    if _LSF_BARE.match(text):
        return Raw(text)
    if any(c in text for c in '"$`\\\n\r'):
        raise RenderError(f"cannot write {text!r} into a #BSUB directive (no quotes, $, ` or \\ allowed)")
    return Raw(f'"{text}"')


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["raw"] = Raw
    env.filters["lsf"] = lsf_quote
    return env


_ENV = _environment()


def job_python(profile: Profile, repo_root: Path) -> str:
    """The interpreter command for the job (shell text): the profile's, its venv's, or this one."""
    if profile.python:
        return profile.python  # the profile's own shell, e.g. "apptainer exec --nv img.sif python"
    venv = profile.venv_path(repo_root)
    return shlex.quote(str(venv / "bin" / "python")) if venv else shlex.quote(sys.executable)


def submitit_command(python: str, folder: Path | str) -> str:
    """The line submitit's job side runs (`python -u -m submitit.core._submit FOLDER`); `python` is shell."""
    return f"{python} -u -m submitit.core._submit {shlex.quote(str(folder))}"


@dataclass(frozen=True)
class ScriptRequest:
    profile: Profile
    resources: Resources
    job_name: str
    folder: Path  # submitit's folder: logs, pickles, scripts (absolute)
    command: str  # shell text, e.g. submitit_command(...); printed verbatim
    repo_root: Path  # the job starts here
    array_size: int = 0  # > 0: one job array of this many elements
    array_parallelism: int = 0  # 0: the profile's
    runs: tuple[str, ...] = ()  # the run names this script serves, for the header comment
    sweep: str = ""

    @property
    def scheduler(self) -> str:
        return self.profile.scheduler


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def _context(req: ScriptRequest) -> dict[str, object]:
    prof, res = req.profile, req.resources
    folder = str(req.folder)
    ntasks = res.ntasks_per_node
    parallelism = min(req.array_size, req.array_parallelism or prof.array_parallelism)
    venv = prof.venv_path(req.repo_root)
    ctx: dict[str, object] = {
        "req": req,
        "profile": prof,
        "res": res,
        "job_name": req.job_name,
        "sweep": req.sweep or req.job_name,
        "runs": ", ".join(req.runs[:8]) + (f", ... ({len(req.runs)} runs)" if len(req.runs) > 8 else ""),
        "queue": res.queue or prof.queue,
        "ntasks": ntasks,
        "time_min": res.time_min,
        "signal": PREEMPT_SIGNAL,
        "signal_delay_s": prof.signal_delay_s,
        "requeue_exit_code": EXIT_REQUEUE,
        "modules": prof.modules,
        "venv_activate": str(venv / "bin" / "activate") if venv else "",
        "env": prof.env,
        "omp_threads": 0 if "OMP_NUM_THREADS" in prof.env_dict else res.cpus_per_task,
        "scratch": prof.scratch,
        "setup": prof.setup,
        "extra_directives": prof.extra_directives,
        "repo_root": str(req.repo_root),
        "command": Raw(req.command),
        "array_size": req.array_size,
        "array_parallelism": parallelism,
    }
    for line in prof.setup + prof.extra_directives:
        if "\n" in line:
            raise RenderError(f"profile {prof.name}: setup and extra_directives entries must be one line, got {line!r}")
    if prof.scheduler == "slurm":
        tag = "%A_%a" if req.array_size else "%j"
        ctx.update(
            stdout=f"{folder}/{tag}_0_log.out",
            stderr=f"{folder}/{tag}_0_log.err",
            task_stdout=f"{folder}/{tag}_%t_log.out",
            task_stderr=f"{folder}/{tag}_%t_log.err",
            mem=(f"{int(res.mem_gb)}G" if res.mem_gb == int(res.mem_gb) else f"{math.ceil(res.mem_gb * 1024)}M"),
            array=f"0-{req.array_size - 1}%{parallelism}" if req.array_size else "",
        )
    elif prof.scheduler == "lsf":
        slots = res.cpus_per_task * ntasks
        mem_gb = res.mem_gb / slots if prof.mem_per_slot else res.mem_gb
        tag = "%J_%I" if req.array_size else "%J"
        ctx.update(
            lsf_job_name=(f"{req.job_name}[1-{req.array_size}]%{parallelism}" if req.array_size else req.job_name),
            slots=slots,
            rusage=f"rusage[mem={max(1, math.ceil(mem_gb))}GB]",
            gpu=f"num={res.gpus_per_node}:mode={prof.gpu_mode}" if res.gpus_per_node else "",
            walltime=_hhmm(res.time_min),
            warning_min=max(1, math.ceil(prof.signal_delay_s / 60)),
            stdout=f"{folder}/{tag}_0_log.out",
            stderr=f"{folder}/{tag}_0_log.err",
            # per-task logs of ranks >= 1, named as submitit's JobPaths expects ("<id>[_<index>]_<task>")
            task_log_prefix=Raw(shlex.quote(folder + "/") + '"${LSB_JOBID}${TRM_LSF_INDEX_TAG}_${t}_log"'),
        )
    return ctx


def render_script(req: ScriptRequest) -> str:
    """The whole job script for `req.profile.scheduler` (slurm, lsf or local)."""
    template = _ENV.get_template(f"{req.scheduler}.sh.j2")
    return template.render(**_context(req))
