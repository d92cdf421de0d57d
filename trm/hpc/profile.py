"""Cluster profiles (`env/*.yaml`): what a site needs that a sweep should not have to know.

    profile = load_profile("env/dtu-lsf.yaml")     # or load_profile("local")

A profile names the scheduler (slurm, lsf or local), the default queue/partition and the ones that
exist, the modules to load, the venv to activate, environment variables, a scratch folder and the
site's limits (array size, warning signal). Users add their cluster by copying one file.

No secret goes through a profile: a variable whose name looks like a credential (KEY, TOKEN,
SECRET, PASSWORD, ...) may be neither set (`env: {WANDB_API_KEY: ...}`) nor referenced
(`env: {WB: $WANDB_API_KEY}`, `scratch: /x/$MY_TOKEN`) anywhere in it, since references are
expanded into the job script. Job scripts and scheduler logs are kept readable by the owner only
(`group_access: true` lets the group read them too; see `protect_dir`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from trm.fields import Mismatch, coerce, field_types
from trm.hpc.backends import BACKENDS
from trm.rundir import atomic_write_text

# Names that look like credentials: they must never be written into a job script.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProfileError(ValueError):
    """A cluster profile the user must fix; the message names the file and the field."""


@dataclass(frozen=True)
class Profile:
    name: str
    scheduler: str  # a name in trm.hpc.backends.BACKENDS
    path: Path | None = None  # None for the built-in "local" profile
    queue: str = ""  # default SLURM partition / LSF queue; empty: the scheduler's default
    queues: tuple[str, ...] = ()  # the queues the cluster has; empty: not checked before submitting
    modules: tuple[str, ...] = ()  # `module load` each, in order, before the venv is activated
    venv: str = ".venv"  # relative to the repo root, or absolute; empty: no activation
    python: str = ""  # interpreter for the job; empty: <venv>/bin/python, else the submitting one
    env: tuple[tuple[str, str], ...] = ()  # exported in the job script (never secrets)
    setup: tuple[str, ...] = ()  # extra shell lines, run after the venv is activated (the user's own shell)
    scratch: str = ""  # exported as TRM_SCRATCH and TMPDIR; created if missing
    runs_root: str = ""  # where runs/<sweep>/<run> live on this cluster; empty: ./runs
    gpu_mode: str = "exclusive_process"  # LSF -gpu mode
    mem_per_slot: bool = True  # LSF rusage[mem] is per slot (DTU) rather than per job
    gpu_directive: Literal["gpus-per-node", "gres"] = "gpus-per-node"  # SLURM GPU request style
    account: str = ""  # SLURM --account / LSF -P
    signal_delay_s: int = 120  # the warning signal comes this long before the time limit
    array_limit: int = 1000  # largest array the site accepts (SLURM MaxArraySize-1, LSF MAX_JOB_ARRAY_SIZE)
    array_parallelism: int = 64  # at most this many elements of one array run at once
    max_num_timeout: int = 3  # requeues after hitting the time limit; preemptions are unlimited
    lsf_requeue: Literal["exit_code", "brequeue"] = "exit_code"  # LSF: `-Q 75` + exit 75, or brequeue
    extra_directives: tuple[str, ...] = ()  # raw scheduler options, e.g. "--qos=high" or "-R select[gpu32gb]"
    group_access: bool = False  # job scripts and logs readable by the group too (never by others)

    @property
    def file_mode(self) -> int:
        return 0o640 if self.group_access else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.group_access else 0o700

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def venv_path(self, repo_root: Path) -> Path | None:
        if not self.venv:
            return None
        path = Path(os.path.expanduser(self.venv))
        return path if path.is_absolute() else repo_root / path


_FIELDS = {f.name: f for f in dataclasses.fields(Profile) if f.name not in ("path",)}


_VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _refuse_secret_refs(value: str, where: str) -> None:
    secret = [m for m in _VAR_REF.findall(value) if _SECRET_NAME.search(m)]
    if secret:
        raise ProfileError(
            f"{where}: '{value}' refers to ${secret[0]}, which looks like a credential; a profile's values are "
            f"written into job scripts, so no secret may go through them. Leave it out: on the node, tools read "
            f"it from your environment or their own login (e.g. `wandb login` stores the key in ~/.netrc)"
        )


def _expand(value: str, where: str) -> str:
    """Expand ~ and $VARS of the submitting shell; an unset variable is an error, not an empty string."""
    _refuse_secret_refs(value, where)
    missing = [m for m in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value) if m not in os.environ]
    if missing:
        raise ProfileError(f"{where}: '{value}' uses ${missing[0]}, which is not set in this shell")
    return os.path.expanduser(os.path.expandvars(value))


_TYPES = field_types(Profile)
_LOWEST = {"signal_delay_s": 1, "array_limit": 1, "array_parallelism": 1, "max_num_timeout": 0}
# Fields checked by their annotation alone (trm/fields.py); the others need more (paths, secrets).
_PLAIN = (*_LOWEST, "mem_per_slot", "group_access", "gpu_directive", "lsf_requeue")


def _typed(raw: dict[str, Any], key: str, source: str) -> Any:
    """`raw[key]` as Profile's field of that name holds it, or an error naming the file and the key."""
    try:
        return coerce(raw.get(key), _TYPES[key], strict=True, low=_LOWEST.get(key))
    except Mismatch as e:
        raise ProfileError(f"{source}: {key} must be {e.expected}, got {raw.get(key)!r}") from None


def profile_from_dict(raw: dict[str, Any], source: str, path: Path | None = None) -> Profile:
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ProfileError(f"{source}: unknown key '{unknown[0]}'. Valid keys: {', '.join(sorted(_FIELDS))}")
    kw: dict[str, Any] = {}
    scheduler = raw.get("scheduler")
    if scheduler not in BACKENDS:
        raise ProfileError(f"{source}: 'scheduler' must be one of {', '.join(BACKENDS)}, got {scheduler!r}")
    kw["scheduler"] = scheduler
    kw["name"] = str(raw.get("name") or (path.stem if path else scheduler))
    for key in ("queues", "modules", "setup", "extra_directives"):
        kw[key] = _typed(raw, key, source) if raw.get(key) is not None else ()
        for item in kw[key]:
            _refuse_secret_refs(item, f"{source}: {key}")
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise ProfileError(f"{source}: env must be a mapping NAME: value, got {env!r}")
    pairs = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ProfileError(f"{source}: env: '{name}' is not a valid environment variable name")
        if _SECRET_NAME.search(name):
            raise ProfileError(
                f"{source}: env: '{name}' looks like a credential; secrets never go into job scripts. "
                f"Log in on the cluster instead (e.g. `wandb login`, which stores the key in ~/.netrc)"
            )
        if isinstance(value, (dict, list)) or value is None:
            raise ProfileError(f"{source}: env: {name} must be a string or number, got {value!r}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        pairs.append((name, _expand(text, f"{source}: env: {name}")))
    kw["env"] = tuple(pairs)
    for key in ("queue", "venv", "python", "gpu_mode", "account"):
        if raw.get(key) is not None:
            kw[key] = _typed(raw, key, source)
            _refuse_secret_refs(kw[key], f"{source}: {key}")
    for key in ("scratch", "runs_root"):
        if raw.get(key):
            if not isinstance(raw[key], str):
                raise ProfileError(f"{source}: {key} must be a path, got {raw[key]!r}")
            kw[key] = _expand(raw[key], f"{source}: {key}")
    kw.update({key: _typed(raw, key, source) for key in _PLAIN if key in raw})
    if kw.get("queue") and kw["queues"] and kw["queue"] not in kw["queues"]:
        raise ProfileError(f"{source}: queue '{kw['queue']}' is not in queues ({', '.join(kw['queues'])})")
    return Profile(path=path, **kw)


LOCAL = Profile(name="local", scheduler="local", venv="")


def protect_dir(path: Path, profile: Profile) -> Path:
    """Create `path` (if needed) readable by the owner only, or the group as the profile says: the job
    scripts, scheduler logs and pickles inside are then out of other users' reach whatever their modes."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, profile.dir_mode)
    return path


def write_private(path: Path, text: str, profile: Profile) -> None:
    """Write a job script atomically with the profile's file mode (never world-readable, not even
    for a moment: the mode is set before the rename)."""
    atomic_write_text(path, text, mode=profile.file_mode)


def load_profile(ref: str | Path, repo_root: Path | None = None) -> Profile:
    """`ref` is "local" (no scheduler) or a YAML file, relative to `repo_root` (default: cwd) or absolute."""
    if str(ref) == "local":
        return LOCAL
    path = Path(ref)
    if not path.is_absolute():
        path = (repo_root or Path.cwd()) / path
    if not path.is_file():
        shipped = sorted(p.name for p in (repo_root or Path.cwd()).glob("env/*.yaml"))
        raise ProfileError(
            f"profile '{ref}' does not exist (looked at {path}). Use 'local' or one of "
            f"env/: {', '.join(shipped) or 'none found'}"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: not valid UTF-8 YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path}: expected a mapping of settings, got {type(raw).__name__}")
    return profile_from_dict(raw, f"profile {path}", path)
