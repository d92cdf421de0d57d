"""Where builders write: a staged folder swapped in only when complete, and a guard against silent overwrites.

Every built folder holds `build_info.json` (builder name and arguments). Building again with the same
builder and arguments is a no-op; a folder holding anything else is replaced only with `--force`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from trm.data.format import Metadata, validate_dataset, write_identifiers, write_split
from trm.rundir import atomic_write_text

BUILD_INFO = "build_info.json"
BUILD_INFO_VERSION = 1

T = TypeVar("T")


class BuildError(ValueError):
    """Bad builder input or output folder; the message names the file/row/task and what was expected."""


def progress(desc: str, iterable: Iterable[T] | None = None, total: int | None = None) -> tqdm:
    """A tqdm bar on stderr (hidden when stderr is not a terminal, so logs stay clean)."""
    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True)


def build_info(builder: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"builder": builder, "args": {k: args[k] for k in sorted(args)}, "version": BUILD_INFO_VERSION}


def existing_build(out: Path, info: dict[str, Any], force: bool) -> bool:
    """True when `out` already holds exactly this build; raises BuildError when it holds something else.

    With force=True a different (or foreign) folder is allowed and will be replaced.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise BuildError(f"output '{out}' exists and is not a folder; choose another --out or remove it")
    if not any(out.iterdir()):
        return False
    info_path = out / BUILD_INFO
    old: dict[str, Any] | None = None
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            old = None
    if old == info and not validate_dataset(out):
        return not force
    if force:
        return False
    if old is None:
        what = "files that this tool did not build (no readable build_info.json)"
    elif old == info:
        what = "this build, but it fails validation: " + "; ".join(validate_dataset(out))
    else:
        what = (
            f"a different dataset (builder '{old.get('builder')}', arguments {old.get('args')}; "
            f"this call asks for builder '{info['builder']}', arguments {info['args']})"
        )
    raise BuildError(
        f"output folder '{out}' already holds {what}. Nothing was changed. Pass --force to "
        f"replace it, or choose another --out."
    )


@dataclass
class SplitData:
    """One split ready to write; arrays follow trm.data.format."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more per-puzzle arrays, e.g. num_demos

    @classmethod
    def one_example_per_puzzle(
        cls, inputs: np.ndarray, labels: np.ndarray, puzzles_per_group: int, identifiers: np.ndarray | None = None
    ) -> SplitData:
        """Rows grouped consecutively, `puzzles_per_group` puzzles per group, one example per puzzle."""
        num = inputs.shape[0]
        if num % puzzles_per_group:
            raise ValueError(f"{num} rows do not split into groups of {puzzles_per_group}")
        ids = np.zeros(num, np.int32) if identifiers is None else np.asarray(identifiers, np.int32)
        return cls(
            inputs,
            labels,
            ids,
            np.arange(num + 1, dtype=np.int32),
            np.arange(0, num + 1, puzzles_per_group, dtype=np.int32),
        )

    def metadata(self, **kw: Any) -> Metadata:
        num_puzzles = len(self.puzzle_identifiers)
        return Metadata(
            total_groups=len(self.group_indices) - 1,
            total_puzzles=num_puzzles,
            mean_puzzle_examples=float(self.inputs.shape[0] / max(num_puzzles, 1)),
            **kw,
        )


@dataclass
class Built:
    """What a builder hands to the writer, plus lines to print."""

    splits: dict[str, SplitData]
    meta: dict[str, object]
    identifiers: list[str]
    extra_files: dict[str, str] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    # builders whose arrays do not fit in memory write the splits themselves into the staging folder
    write_splits: Callable[[Path], None] | None = None


def row_keys(a: np.ndarray) -> list[bytes]:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.uint8))
    return [r.tobytes() for r in a]


def write_dataset(
    out: Path,
    info: dict[str, Any],
    splits: dict[str, SplitData],
    meta: dict[str, Any],
    identifiers: list[str],
    extra_files: dict[str, str] | None = None,
    write_splits: Callable[[Path], None] | None = None,
) -> None:
    """Write all splits into a staging folder beside `out`, validate, then swap it in.

    A reader never sees a half-written dataset; an old folder (allowed by --force) is removed only after the
    new one is complete.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.building-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        if write_splits is not None:
            write_splits(stage)
        for name, split in splits.items():
            write_split(
                stage,
                name,
                split.metadata(**meta),
                split.inputs,
                split.labels,
                split.puzzle_identifiers,
                split.puzzle_indices,
                split.group_indices,
            )
            for extra, array in split.extra.items():
                np.save(stage / name / f"all__{extra}.npy", array)
        write_identifiers(stage, identifiers)
        for fname, text in (extra_files or {}).items():
            atomic_write_text(stage / fname, text)
        problems = validate_dataset(stage)
        if problems:
            raise BuildError("the built dataset failed validation (a bug in the builder):\n  " + "\n  ".join(problems))
        atomic_write_text(stage / BUILD_INFO, json.dumps(info, indent=2))
        _share_like_umask(stage)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


class StreamingSplit:
    """Write one split example-block by example-block into .npy files (for datasets larger than memory).

    Produces the same files as trm.data.format.write_split: uint8 token arrays, int32 index arrays.
    """

    def __init__(self, root: Path, split: str, num_examples: int, seq_len: int, meta: dict[str, Any]) -> None:
        self.dir = Path(root) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.arrays = {
            name: np.lib.format.open_memmap(
                self.dir / f"all__{name}.npy", mode="w+", dtype=np.uint8, shape=(num_examples, seq_len)
            )
            for name in ("inputs", "labels")
        }
        self.num_examples = num_examples
        self.pos = 0
        self.puzzle_indices = [0]
        self.group_indices = [0]
        self.identifiers: list[int] = []
        self.extra: dict[str, list[int]] = {}

    def add_group(self, inputs: np.ndarray, labels: np.ndarray, identifiers: np.ndarray, **extra: np.ndarray) -> None:
        """One group: inputs/labels (puzzles, examples, seq_len), one identifier (and extras) per puzzle."""
        num_p, num_e = inputs.shape[:2]
        end = self.pos + num_p * num_e
        self.arrays["inputs"][self.pos : end] = inputs.reshape(num_p * num_e, -1)
        self.arrays["labels"][self.pos : end] = labels.reshape(num_p * num_e, -1)
        self.puzzle_indices.extend(range(self.pos + num_e, end + 1, num_e))
        self.pos = end
        self.identifiers.extend(int(i) for i in identifiers)
        self.group_indices.append(len(self.identifiers))
        for name, values in extra.items():
            self.extra.setdefault(name, []).extend(int(v) for v in values)

    def close(self) -> None:
        if self.pos != self.num_examples:
            raise BuildError(f"{self.dir}: wrote {self.pos} examples, expected {self.num_examples} (builder bug)")
        for a in self.arrays.values():
            a.flush()
        del self.arrays
        index = {
            "puzzle_identifiers": self.identifiers,
            "puzzle_indices": self.puzzle_indices,
            "group_indices": self.group_indices,
        }
        for name, values in {**index, **self.extra}.items():
            np.save(self.dir / f"all__{name}.npy", np.asarray(values, dtype=np.int32))
        num_puzzles = len(self.identifiers)
        meta = Metadata(
            total_groups=len(self.group_indices) - 1,
            total_puzzles=num_puzzles,
            mean_puzzle_examples=float(self.num_examples / max(num_puzzles, 1)),
            **self.meta,
        )
        atomic_write_text(self.dir / "dataset.json", json.dumps(dataclasses.asdict(meta), indent=2))


def _share_like_umask(root: Path) -> None:
    """Temp-file writes create 0600 files; datasets are shared between jobs and users, so honour the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for p in root.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
