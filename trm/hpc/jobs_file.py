"""`jobs.txt`: the seeds' plain queue, one `tools/train.py ...` command a line, with a status box.

    [ ] python tools/train.py trm/configs/quickstart.yaml arch.L_layers=1      pending
    [-] python tools/train.py trm/configs/quickstart.yaml seed=1 [gpu3:4711/4720]   running (runner host:pid,
                                                                   and the line's process group once started)
    [x] python tools/train.py trm/configs/quickstart.yaml seed=2               done
    [!] python tools/train.py trm/configs/quickstart.yaml seed=3 [exit 1]      failed (exit status)
    # comments and blank lines are kept as they are

`tools/run_queue.py` runs the pending lines here (see `trm.hpc.queue`); `tools/submit.py jobs.txt`
turns them into a sweep (`jobs_sweep`: training lines train as runs, any other line runs as a plain
command) and marks the submitted lines `[-] ... [slurm:<job id>]`; the job marks its line `[x]` or
`[!] ... [exit N]` when it ends (`tools/status.py jobs.txt` does it for a job that died silently).
Every writer holds `jobs.txt.lock`, an empty file beside it that stays.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from filelock import FileLock

from trm.config import Config, ConfigError, check_runnable, config_hash, load_config
from trm.data.format import atomic_write_text
from trm.hpc.profile import Profile
from trm.hpc.spec import (
    DEFAULT_METRIC,
    Resources,
    RunSpec,
    SpecError,
    Sweep,
    canonical_key,
    check_name,
    find_repo_root,
)

BOXES = {" ": "pending", "-": "running", "x": "done", "!": "failed"}
_BOX_OF = {state: box for box, state in BOXES.items()}
_LINE = re.compile(r"^\[(?P<box>.)\]\s+(?P<rest>\S.*?)\s*$")
_OWNER = re.compile(r"\s+\[(?P<owner>[A-Za-z0-9._-]+:\d+(?:_\d+)?(?:/\d+)?)\]$")  # host:pid/pgid, slurm:4711_3
_EXIT = re.compile(r"\s+\[exit (?P<code>-?\d+)\]$")
_TRAIN_SCRIPTS = ("train.py", "trm-train")
# Words that make a line shell rather than one command: such a line runs as a plain job.
_SHELL_WORDS = {";", "&&", "||", "|", "&", ">", ">>", "<", "2>", "2>&1", "(", ")"}


class JobsFileError(ValueError):
    """A jobs.txt line that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class JobLine:
    lineno: int  # 1-based line number in the file
    state: str  # pending | running | done | failed
    command: str
    owner: str = ""  # "host:pid" of the runner (or "slurm:<job id>") while running
    exit_code: int | None = None  # of a failed command

    def format(self) -> str:
        text = f"[{_BOX_OF[self.state]}] {self.command}"
        if self.state == "running" and self.owner:
            text += f" [{self.owner}]"
        if self.state == "failed" and self.exit_code is not None:
            text += f" [exit {self.exit_code}]"
        return text


def parse_line(text: str, lineno: int, source: str = "jobs.txt") -> JobLine | None:
    """One line; None for a comment or a blank line."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    m = _LINE.match(stripped)
    if not m or m["box"].lower() not in BOXES:
        raise JobsFileError(
            f"{source}:{lineno}: expected a status box and a command, e.g. '[ ] python tools/train.py "
            f"CONFIG.yaml key=value' ('[ ]' pending, '[-]' running, '[x]' done, '[!]' failed, '#' comment); "
            f"got {stripped[:80]!r}"
        )
    state, rest = BOXES[m["box"].lower()], m["rest"]
    owner, code = "", None
    # Only the suffix this state carries is ours: a command may itself end in "[a:1]" or "[exit 3]".
    if state == "running" and (om := _OWNER.search(rest)):
        owner, rest = om["owner"], rest[: om.start()]
    elif state == "failed" and (em := _EXIT.search(rest)):
        code, rest = int(em["code"]), rest[: em.start()]
    return JobLine(lineno, state, rest.strip(), owner if state == "running" else "", code)


def parse_jobs_text(text: str, source: str = "jobs.txt") -> list[JobLine]:
    jobs = []
    for i, line in enumerate(text.splitlines(), 1):
        job = parse_line(line, i, source)
        if job is not None:
            jobs.append(job)
    return jobs


def replace_line(text: str, job: JobLine) -> str:
    """`text` with line `job.lineno` rewritten to `job` (the other lines byte for byte unchanged)."""
    lines = text.splitlines(keepends=True)
    old = lines[job.lineno - 1]
    newline = old[len(old.rstrip("\r\n")) :]
    lines[job.lineno - 1] = job.format() + (newline or "")
    return "".join(lines)


def with_state(job: JobLine, state: str, owner: str = "", exit_code: int | None = None) -> JobLine:
    return replace(job, state=state, owner=owner, exit_code=exit_code)


@dataclass(frozen=True)
class TrainCommand:
    config: str
    overrides: list[str]


def train_command(job: JobLine, source: str = "jobs.txt") -> TrainCommand:
    """The config and overrides of a `[python|torchrun ...] tools/train.py CONFIG k=v ...` line."""
    where = f"{source}:{job.lineno}"
    try:
        words = shlex.split(job.command)
    except ValueError as e:
        raise JobsFileError(f"{where}: cannot split the command into words ({e}): {job.command!r}") from None
    start = None
    for i, w in enumerate(words):
        if Path(w).name in _TRAIN_SCRIPTS:
            start = i + 1
            break
        if w == "-m" and i + 1 < len(words) and words[i + 1] in ("trm.train", "trm.train.entry"):
            start = i + 2
            break
    if start is None or start >= len(words) or "=" in words[start]:
        raise JobsFileError(
            f"{where}: expected a `tools/train.py CONFIG.yaml [key=value ...]` command, got {job.command!r}"
        )
    overrides = words[start + 1 :]
    for w in overrides:
        if "=" not in w:
            raise JobsFileError(f"{where}: '{w}' is not a key=value override (in {job.command!r})")
    return TrainCommand(words[start], overrides)


def is_train_line(job: JobLine) -> bool:
    """A `[python|torchrun ...] tools/train.py CONFIG k=v ...` line with nothing else (no `;`, `|`,
    redirections): it trains with the cluster layer's checkpoint/requeue handling. Any other line is a
    plain command."""
    try:
        words = shlex.split(job.command)
    except ValueError:
        return False
    if any(w in _SHELL_WORDS or w.endswith(";") for w in words) or any(c in job.command for c in "`$"):
        return False
    return any(Path(w).name in _TRAIN_SCRIPTS for w in words) or any(
        w == "-m" and nxt in ("trm.train", "trm.train.entry") for w, nxt in zip(words, words[1:])
    )


def command_run_name(command: str) -> str:
    """A plain command's run name: stable while its text stays the same."""
    import hashlib

    return f"cmd-{hashlib.sha256(command.encode()).hexdigest()[:10]}"


def jobs_sweep(
    path: str | Path,
    profile: Profile,
    resources: Resources,
    runs_root: str | Path | None = None,
    states: tuple[str, ...] = ("pending",),
) -> tuple[Sweep, dict[str, JobLine]]:
    """The lines of a jobs.txt in `states` as a sweep named after the file, and run name -> line.

    A line's run name is its `run.name` override, else `<config stem>-<config hash>`.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise JobsFileError(f"jobs file '{path}' does not exist")
    repo_root = find_repo_root(path.parent)
    sweep_name = check_name(path.stem, f"{path}: the sweep name (the file's name)")
    root = Path(runs_root if runs_root is not None else (profile.runs_root or "runs")).expanduser().resolve()
    runs: list[RunSpec] = []
    lines: dict[str, JobLine] = {}
    for job in parse_jobs_text(read_jobs_text(path), str(path)):
        if job.state not in states:
            continue
        where = f"{path}:{job.lineno}"
        if not is_train_line(job):
            name = command_run_name(job.command)
            if name in lines:
                raise SpecError(f"{where}: the same command as line {lines[name].lineno}; a plain command runs once")
            runs.append(
                RunSpec(
                    name,
                    {},
                    Config(),
                    {},
                    {},
                    root / sweep_name / name,
                    Path(),
                    command=job.command,
                    jobs_command=job.command,
                )
            )
            lines[name] = job
            continue
        cmd = train_command(job, str(path))
        config_path = Path(cmd.config)
        config_path = config_path if config_path.is_absolute() else repo_root / config_path
        overrides: dict[str, str] = {}
        name = ""
        for item in cmd.overrides:
            key, value = item.split("=", 1)
            canon = canonical_key(key)
            if canon == "run.name":
                name = value
            elif canon == "run.root":
                raise SpecError(
                    f"{where}: run.root is set by tools/submit.py (runs go to "
                    f"{root}/{sweep_name}/); drop it from the line"
                )
            else:
                overrides[canon] = value
        try:
            cfg = load_config(config_path, [f"{k}={v}" for k, v in overrides.items()])
        except ConfigError as e:
            raise SpecError(f"{where}: invalid config: {e}") from None
        name = check_name(name or f"{config_path.stem}-{config_hash(cfg)[:8]}", f"{where}: run name")
        if name in lines:
            raise SpecError(
                f"{where}: run name '{name}' is also line {lines[name].lineno}'s; give one of "
                f"them a distinct run.name=..."
            )
        run = RunSpec(name, overrides, cfg, {}, {}, root / sweep_name / name, config_path, jobs_command=job.command)
        try:
            run.config = load_config(config_path, run.train_argv()[1:])
            check_runnable(run.config)  # what the trainer would refuse on the node
        except ConfigError as e:
            raise SpecError(f"{where} (run '{name}'): invalid config: {e}") from None
        runs.append(run)
        lines[name] = job
    sweep = Sweep(sweep_name, path, runs, None, DEFAULT_METRIC, resources, profile, root, Path(), repo_root)
    return sweep, lines


def lock_for(path: Path) -> FileLock:
    """The lock every writer of a jobs file holds (queue runners, tools/submit.py)."""
    return FileLock(str(path) + ".lock", timeout=120)


def read_jobs_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise JobsFileError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the jobs file as UTF-8"
        ) from None


def write_keeping_mode(path: Path, text: str) -> None:
    """Replace `path` atomically, keeping its permission bits and group (a shared queue stays shared)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        atomic_write_text(path, text)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chown(tmp, -1, st.st_gid)
        except OSError:
            pass  # not a member of that group: keep ours
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite(path: Path, edit: Callable[[str], str]) -> None:
    """Read-modify-write `path` under its lock, replacing it atomically."""
    with lock_for(path):
        text = read_jobs_text(path)
        new = edit(text)
        if new != text:
            write_keeping_mode(path, new)


def mark_ended(path: Path, command: str, owner: str, code: int) -> bool:
    """The running line of `command` owned by `owner` (e.g. `slurm:4711_0`) becomes `[x]` (code 0)
    or `[!] ... [exit code]`; False when no such line is left (edited, or marked already)."""
    found = []

    def edit(text: str) -> str:
        for now in parse_jobs_text(text, str(path)):
            if now.state == "running" and now.owner == owner and now.command == command:
                found.append(now)
                state = "done" if code == 0 else "failed"
                return replace_line(text, with_state(now, state, exit_code=None if code == 0 else code))
        return text

    rewrite(path, edit)
    return bool(found)


def mark_submitted(path: Path, owners: dict[JobLine, str]) -> None:
    """Mark submitted lines running with their scheduler job as owner, e.g. `[-] ... [slurm:4711]`."""

    def edit(text: str) -> str:
        current = {j.lineno: j for j in parse_jobs_text(text, str(path))}
        for job, owner in owners.items():
            now = current.get(job.lineno)
            if now is not None and now.command == job.command and now.state == "pending":
                text = replace_line(text, with_state(now, "running", owner=owner))
        return text

    rewrite(path, edit)
