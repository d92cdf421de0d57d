"""Full-state checkpoints that can be trusted.

    checkpoints/step-00012000/state.pt        model, EMA, optimizers, schedule, step, sampler, config (rank 0)
    checkpoints/step-00012000/rank-00003.pt   that rank's ACT carry and RNG states (every rank)
    checkpoints/step-00012000/COMPLETE        written last; a folder without it does not count; holds the
                                              size and SHA-256 of every file, checked before loading

Every rank writes its file into `.partial-step-N/` and then a `rank-K.done` marker; rank 0 waits
for all markers, fsyncs, renames the folder to `step-N`, writes COMPLETE and prunes old ones. The
snapshot (a CPU copy of what the next step would change in place) is taken on the training thread;
the writing can run on a background thread, so a save stalls training only for the copy.
A process killed at any point leaves either a complete checkpoint or one that `latest` skips. A
complete one damaged later (truncated, overwritten) fails its checksums; resuming then warns, names
the folder, and falls back to the next older complete checkpoint (`load_with_fallback`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MARKER = "COMPLETE"
PREFIX = "step-"


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _save_file(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _touch_synced(path: Path, text: str = "") -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class CheckpointDamaged(RuntimeError):
    """A checkpoint marked complete whose files do not match the marker, or cannot be loaded."""


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def _marker_text(step: int, folder: Path) -> str:
    files = {p.name: _digest(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix == ".pt"}
    return json.dumps({"step": step, "files": files}, indent=1) + "\n"


def verify(path: Path, full: bool = True) -> str | None:
    """None when every file the marker lists is there with its size (and, with `full`, its SHA-256);
    else what is wrong. A marker of an older version (just the step) only needs state.pt to exist."""
    try:
        text = (path / MARKER).read_text()
    except OSError as e:
        return f"cannot read {MARKER}: {e.strerror}"
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        return None if (path / "state.pt").is_file() else "state.pt is missing"
    for name, want in files.items():
        f = path / name
        try:
            size = f.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} were written"
        if full and _digest(f)["sha256"] != want["sha256"]:
            return f"{name} does not match its SHA-256 (changed after it was written)"
    return None


def to_cpu(obj: Any, clone: bool) -> Any:
    """A CPU copy of every tensor in a nested structure (cloned when it may change in place later)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            return t.to("cpu")
        return t.clone() if clone else t
    if isinstance(obj, dict):
        return {k: to_cpu(v, clone) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v, clone) for v in obj)
    return obj


def list_checkpoints(root: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) for every step folder, oldest first."""
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith(PREFIX) and d.name[len(PREFIX) :].isdigit():
                out.append((int(d.name[len(PREFIX) :]), d, (d / MARKER).is_file()))
    return sorted(out)


def latest(root: Path, warn: bool = True, below: int | None = None) -> Path | None:
    """The newest complete checkpoint (older than step `below` if given); torn ones (no COMPLETE) are
    named in a warning and skipped."""
    found = [c for c in list_checkpoints(root) if below is None or c[0] < below]
    torn = [d.name for _, d, ok in found if not ok]
    torn += [d.name for d in root.glob(".partial-*")] if root.is_dir() else []
    if torn and warn:
        warnings.warn(f"ignoring incomplete checkpoints in {root}: {', '.join(sorted(torn))}", stacklevel=2)
    complete = [d for _, d, ok in found if ok]
    return complete[-1] if complete else None


def load(path: Path, rank: int, device: torch.device) -> tuple[dict, dict | None]:
    """(main state, this rank's state or None when the checkpoint has no file for this rank).
    Raises CheckpointDamaged when the files do not match the marker or cannot be read."""
    problem = verify(path)
    if problem is not None:
        raise CheckpointDamaged(f"{path}: {problem}")
    rank_file = path / f"rank-{rank:05d}.pt"
    try:
        main = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        rank_state = torch.load(rank_file, map_location="cpu", weights_only=False) if rank_file.is_file() else None
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds on a damaged file; all mean "damaged"
        raise CheckpointDamaged(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None
    if not isinstance(main, dict) or "step" not in main:
        raise CheckpointDamaged(f"{path}: state.pt does not hold a training state")
    return main, rank_state


def load_with_fallback(
    path: Path, root: Path, rank: int, device: torch.device, fallback: bool, say: Callable[[str], None] | None = None
) -> tuple[Path, dict, dict | None]:
    """Load `path`; when it is damaged and `fallback` is on, warn (through `say`) naming it and try the
    next older complete checkpoint in `root`, until one loads. Raises CheckpointDamaged when none does."""
    damaged: list[str] = []
    current: Path | None = path
    while current is not None:
        try:
            main, rank_state = load(current, rank, device)
        except CheckpointDamaged as e:
            if not fallback:
                raise
            damaged.append(str(e))
            step = current.name[len(PREFIX) :]
            current = latest(root, warn=False, below=int(step)) if step.isdigit() else None
            if say is not None:
                say(
                    f"warning: damaged checkpoint skipped: {e}; "
                    f"{'falling back to ' + str(current) if current else 'no older complete one is left'}"
                )
            continue
        return current, main, rank_state
    raise CheckpointDamaged("no complete checkpoint could be loaded: " + "; ".join(damaged))


class CheckpointWriter:
    def __init__(
        self, root: Path, keep: int, rank: int, world_size: int, background: bool, wait_timeout_s: float = 600.0
    ) -> None:
        self.root = root
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self.background = background
        self.wait_timeout_s = wait_timeout_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_write_s = 0.0

    def save(self, step: int, main_state: dict | None, rank_state: dict, wait: bool = False) -> None:
        """main_state is given on rank 0 only. Tensors that change in place later must be cloned by
        the caller's `to_cpu(..., clone=True)`; this only moves device tensors to the CPU."""
        self.join()  # one save at a time
        main_cpu = to_cpu(main_state, clone=False) if main_state is not None else None
        rank_cpu = to_cpu(rank_state, clone=False)
        if self.background and not wait:
            self._thread = threading.Thread(
                target=self._run, args=(step, main_cpu, rank_cpu), daemon=True, name=f"checkpoint-{step}"
            )
            self._thread.start()
        else:
            self._run(step, main_cpu, rank_cpu)
            self.raise_error()

    def _run(self, step: int, main_state: dict | None, rank_state: dict) -> None:
        try:
            t0 = time.perf_counter()
            self._write(step, main_state, rank_state)
            self.last_write_s = time.perf_counter() - t0
        except BaseException as e:  # surfaced on the training thread by join()/raise_error()
            self._error = e

    def _write(self, step: int, main_state: dict | None, rank_state: dict) -> None:
        final = self.root / step_dir_name(step)
        partial = self.root / f".partial-{step_dir_name(step)}"
        partial.mkdir(parents=True, exist_ok=True)
        _save_file(rank_state, partial / f"rank-{self.rank:05d}.pt")
        _touch_synced(partial / f"rank-{self.rank:05d}.done")
        if self.rank != 0:
            return
        assert main_state is not None
        _save_file(main_state, partial / "state.pt")
        deadline = time.monotonic() + self.wait_timeout_s
        for r in range(self.world_size):
            while not (partial / f"rank-{r:05d}.done").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"checkpoint {final}: rank {r} did not finish writing within {self.wait_timeout_s:.0f} s"
                    )
                time.sleep(0.05)
        for r in range(self.world_size):
            (partial / f"rank-{r:05d}.done").unlink()
        marker = _marker_text(step, partial)  # sizes and checksums of what was just written
        _fsync_dir(partial)
        if final.exists():  # a stale folder of the same step from an earlier attempt: replace it
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_dir(self.root)
        _touch_synced(final / MARKER, marker)
        _fsync_dir(final)
        self._prune(step)

    def _prune(self, newest: int) -> None:
        complete = [(s, d) for s, d, ok in list_checkpoints(self.root) if ok]
        for _, d in complete[: -self.keep]:
            shutil.rmtree(d, ignore_errors=True)
        for s, d, ok in list_checkpoints(self.root):
            if not ok and s < newest:
                shutil.rmtree(d, ignore_errors=True)
        for d in self.root.glob(f".partial-{PREFIX}*"):
            step = d.name[len(f".partial-{PREFIX}") :]
            # Other ranks may already be writing a newer step: only older leftovers go.
            if step.isdigit() and int(step) < newest:
                shutil.rmtree(d, ignore_errors=True)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"writing a checkpoint failed: {err}") from err
