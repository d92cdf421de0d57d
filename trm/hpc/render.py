"""Job scripts from the backend's template (`templates/<scheduler>.sh.j2`), through one pure function.

    text = render_script(ScriptRequest(profile, resources, job_name="maze", folder=logs,
                                       command=submitit_command(python, logs), repo_root=repo))

Every template gets the values of `_common_context` and the ones its backend adds
(`Backend.script_context`, e.g. SLURM's memory and log paths, LSF's slots and wall time). Every
`{{ value }}` a template prints is shell-quoted (`shlex.quote`) unless the render code marked it
`Raw` after building it from quoted parts (the submitit command line; LSF's double-quoted directive
values, through the `lsf` filter its backend adds). The only text that goes into a script verbatim
is what a profile writes as shell on purpose (`setup` lines and `extra_directives`). A value with
a newline is refused: it would end a directive early. Profiles cannot carry secrets (see
`trm.hpc.profile`), and nothing from the submitting shell's environment is copied into a script.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from trm.hpc.backends import backend_for
from trm.hpc.backends.submitit_private import MODULES
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


def _environment(filters: dict[str, Callable[[object], str]]) -> jinja2.Environment:
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
    env.filters.update(filters)
    return env


@cache
def _environment_for(scheduler: str) -> jinja2.Environment:
    return _environment(backend_for(scheduler).template_filters())


def job_python(profile: Profile, repo_root: Path) -> str:
    """The interpreter command for the job (shell text): the profile's, its venv's, or this one."""
    if profile.python:
        return profile.python  # the profile's own shell, e.g. "apptainer exec --nv img.sif python"
    venv = profile.venv_path(repo_root)
    return shlex.quote(str(venv / "bin" / "python")) if venv else shlex.quote(sys.executable)


def submitit_command(python: str, folder: Path | str) -> str:
    """The line submitit's job side runs (`python -u -m submitit.core._submit FOLDER`); `python` is shell."""
    return f"{python} -u -m {MODULES[0]} {shlex.quote(str(folder))}"


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

    @property
    def parallelism(self) -> int:
        """How many elements of the array run at once."""
        return min(self.array_size, self.array_parallelism or self.profile.array_parallelism)


def _check_profile_lines(prof: Profile) -> None:
    for line in prof.setup + prof.extra_directives:
        if "\n" in line:
            raise RenderError(f"profile {prof.name}: setup and extra_directives entries must be one line, got {line!r}")


def _runs_comment(runs: tuple[str, ...]) -> str:
    return ", ".join(runs[:8]) + (f", ... ({len(runs)} runs)" if len(runs) > 8 else "")


def _common_context(req: ScriptRequest) -> dict[str, object]:
    """What every template prints: the job, the resources, the warning signal, the environment."""
    prof, res = req.profile, req.resources
    venv = prof.venv_path(req.repo_root)
    return {
        "req": req,
        "profile": prof,
        "res": res,
        "job_name": req.job_name,
        "sweep": req.sweep or req.job_name,
        "runs": _runs_comment(req.runs),
        "queue": res.queue or prof.queue,
        "ntasks": res.ntasks_per_node,
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
        "array_parallelism": req.parallelism,
    }


def render_script(req: ScriptRequest) -> str:
    """The whole job script for `req.profile.scheduler`, from its backend's template."""
    _check_profile_lines(req.profile)
    backend = backend_for(req.scheduler)
    context = {**_common_context(req), **backend.script_context(req)}
    return _environment_for(req.scheduler).get_template(backend.template).render(**context)
