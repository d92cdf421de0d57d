"""Every private (or undocumented) submitit name trm relies on, in one place.

Read from submitit 1.5.4 (facebookincubator/submitit e49d5e7, 2025-12-17; `pip show submitit`).

trm's executors, job, info watcher and job environment subclass submitit's and override hooks that
submitit calls by name (`_make_submission_file_text`, `_submit_command`, `_requeue`, ...): if an
upgrade renamed one, our override would silently stop being called and submitit's stock behaviour
would come back. The functions below are the only places outside those subclasses that read or call
a private name. `problems()` lists each name in `HOOKS`, `INSTANCE_ATTRIBUTES` and `MODULES` that the
installed submitit no longer has, or whose parameters changed; `require()` raises them as one error
(every executor is built after it), and tests/test_hpc_submitit_private.py fails on them.
"""

from __future__ import annotations

import importlib
import inspect
import time
from functools import cache
from importlib import metadata
from typing import Any

SUBMITIT_VERSION_READ = "1.5.4"

# "module:Class.attribute" -> (its parameters, or None for a property / class attribute; who relies on it)
HOOKS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "submitit.core.core:PicklingExecutor._internal_process_submissions": (
        ("self", "delayed_submissions"),
        "the SLURM and LSF executors (arrays with our template)",
    ),
    "submitit.core.core:PicklingExecutor._submit_command": (("self", "command"), "submit_now, LsfExecutor"),
    "submitit.core.core:PicklingExecutor._throttle": (("self",), "submit_now"),
    "submitit.core.core:PicklingExecutor._submitit_command_str": (None, "submit_now, LsfExecutor"),
    "submitit.core.core:PicklingExecutor._make_submission_file_text": (
        ("self", "command", "uid"),
        "the SLURM and LSF executors (our template)",
    ),
    "submitit.core.core:PicklingExecutor._make_submission_command": (
        ("self", "submission_file_path"),
        "LsfExecutor",
    ),
    "submitit.core.core:PicklingExecutor._get_job_id_from_submission_command": (("string",), "LsfExecutor"),
    "submitit.core.core:PicklingExecutor._num_tasks": (("self",), "LsfExecutor"),
    "submitit.core.core:PicklingExecutor._equivalence_dict": ((), "LsfExecutor"),
    "submitit.core.core:PicklingExecutor._valid_parameters": ((), "LsfExecutor"),
    "submitit.core.core:PicklingExecutor._internal_update_parameters": (("self", "kwargs"), "LsfExecutor"),
    "submitit.slurm.slurm:SlurmExecutor._make_submission_file_text": (
        ("self", "command", "uid"),
        "TrmSlurmExecutor (our template)",
    ),
    "submitit.slurm.slurm:SlurmExecutor._internal_process_submissions": (
        ("self", "delayed_submissions"),
        "TrmSlurmExecutor (arrays with our template)",
    ),
    "submitit.local.local:LocalExecutor._submit_command": (("self", "command"), "TrmLocalExecutor"),
    "submitit.core.core:InfoWatcher._make_command": (("self",), "LsfInfoWatcher"),
    "submitit.core.core:Job._cancel_command": (None, "LsfJob"),
    "submitit.core.job_environment:JobEnvironment._env": (None, "LsfJobEnvironment"),
    "submitit.core.job_environment:JobEnvironment._requeue": (
        ("self", "countdown"),
        "requeue (TrainJob), LsfJobEnvironment",
    ),
    # public names, but not documented as API: the array path and the local controller
    "submitit.core.utils:JobPaths.get_first_id_independent_folder": (("folder",), "arrays, local and LSF executors"),
    "submitit.core.utils:JobPaths.move_temporary_file": (
        ("self", "tmp_path", "name", "keep_as_symlink"),
        "arrays, LsfExecutor",
    ),
    "submitit.core.utils:DelayedSubmission.set_timeout": (("self", "timeout_min", "max_num_timeout"), "TrainJob"),
    "submitit.local.local:start_controller": (
        ("folder", "command", "tasks_per_node", "cuda_devices", "timeout_min", "signal_delay_s"),
        "TrmLocalExecutor",
    ),
}
# Attributes set in __init__: checked on a fresh instance.
INSTANCE_ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "submitit.core.utils:DelayedSubmission": (("_timeout_min", "_timeout_countdown"), "timeout_budget (TrainJob)"),
    "submitit.core.core:InfoWatcher": (
        ("_registered", "_finished", "_info_dict", "_last_status_check", "_num_calls"),
        "unfinished_ids, registered_ids, record_update (LsfInfoWatcher)",
    ),
}
# The job side's entry point: every job script runs `python -m submitit.core._submit FOLDER`.
MODULES = ("submitit.core._submit",)


# ---------------------------------------------------------------------------------------------- accessors


def timeout_budget(delayed: Any) -> tuple[float, int]:
    """(time limit in minutes, time-outs still allowed) that a pickled DelayedSubmission carries."""
    return delayed._timeout_min, delayed._timeout_countdown


def requeue(env: Any, countdown: int) -> None:
    """Ask the job environment to requeue this job (SLURM: scontrol requeue; LSF: ours; local: exit code)."""
    env._requeue(countdown)


def submit_now(executor: Any) -> Any:
    """One submission of the executor's script, as submitit's own submission path makes it."""
    executor._throttle()
    return executor._submit_command(executor._submitit_command_str)


def unfinished_ids(watcher: Any) -> set[str]:
    return watcher._registered - watcher._finished


def registered_ids(watcher: Any) -> set[str]:
    return set(watcher._registered)


def record_update(watcher: Any, info: dict[str, dict[str, str]], if_missing: dict[str, dict[str, str]]) -> None:
    """What submitit's InfoWatcher.update does after its query: count the call, store the states
    (`if_missing` only for jobs without one), stamp the time and mark the finished jobs."""
    watcher._num_calls += 1
    watcher._info_dict.update(info)
    for job_id, fields in if_missing.items():
        watcher._info_dict.setdefault(job_id, fields)
    watcher._last_status_check = time.time()
    for job_id in watcher._registered - watcher._finished:
        if watcher.is_done(job_id, mode="cache"):
            watcher._finished.add(job_id)


# ---------------------------------------------------------------------------------------------- the check


def installed_version() -> str:
    try:
        return metadata.version("submitit")
    except metadata.PackageNotFoundError:
        return "unknown"


def _lookup(ref: str) -> tuple[Any, str]:
    """("module:Class.attr" or "module:function") -> (the owner object, the attribute name)."""
    module, _, path = ref.partition(":")
    owner: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def _hook_problem(ref: str, params: tuple[str, ...] | None) -> str | None:
    try:
        owner, name = _lookup(ref)
        inspect.getattr_static(owner, name)
    except (ImportError, AttributeError):
        return f"{ref} is gone"
    if params is None:
        return None
    signature = inspect.signature(getattr(owner, name)).parameters
    found = tuple(signature)
    # More parameters are fine only with defaults: submitit and trm both call it with the ones read.
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    extra = list(signature.values())[len(params) :]
    extra_required = [p for p in extra if p.default is inspect.Parameter.empty and p.kind not in variadic]
    if found[: len(params)] != params or extra_required:
        return f"{ref} now takes ({', '.join(found)}), not ({', '.join(params)})"
    return None


def _instance_problems(ref: str, names: tuple[str, ...]) -> list[str]:
    try:
        owner, cls_name = _lookup(ref)
        cls = getattr(owner, cls_name)
        instance = cls(print) if cls_name == "DelayedSubmission" else cls()
    except (ImportError, AttributeError, TypeError) as e:
        return [f"{ref} cannot be built as trm expects ({e})"]
    return [f"{ref} instances no longer have {name}" for name in names if not hasattr(instance, name)]


def problems() -> list[str]:
    """One line per private name that moved, saying where trm relies on it."""
    found: list[str] = []
    for ref, (params, user) in HOOKS.items():
        if problem := _hook_problem(ref, params):
            found.append(f"{problem} (relied on by {user})")
    for ref, (names, user) in INSTANCE_ATTRIBUTES.items():
        found += [f"{problem} (relied on by {user})" for problem in _instance_problems(ref, names)]
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            found.append(f"module {module} is gone (every job script runs `python -m {module}`)")
    return found


@cache
def require() -> None:
    """Raise, once per process, if the installed submitit moved a name trm relies on."""
    found = problems()
    if found:
        raise RuntimeError(
            f"submitit {installed_version()} is installed, but trm's scheduler backends were written against "
            f"submitit {SUBMITIT_VERSION_READ} and rely on private names it no longer has: {'; '.join(found)}. "
            f"Install submitit=={SUBMITIT_VERSION_READ}, or update trm/hpc/backends/submitit_private.py and "
            "the backends that use these names."
        )
