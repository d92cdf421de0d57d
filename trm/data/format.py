"""The reference's on-disk dataset format, read and written in one place.

    <root>/identifiers.json                 ["<blank>", "name of id 1", ...]
    <root>/{train,test}/dataset.json        Metadata below
    <root>/{train,test}/all__inputs.npy     [num_examples, seq_len] token ids
    <root>/{train,test}/all__labels.npy     [num_examples, seq_len] token ids (ignore_label_id: unsupervised)
    <root>/{train,test}/all__puzzle_identifiers.npy  [num_puzzles] int32
    <root>/{train,test}/all__puzzle_indices.npy      [num_puzzles + 1] example offsets
    <root>/{train,test}/all__group_indices.npy       [num_groups + 1] puzzle offsets

A group is one original task, its puzzles are augmented variants, a puzzle holds examples
(input/label pairs). Datasets built by the paper's builders load unchanged, and ours load there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trm.rundir import atomic_write_text, atomic_write_with

# The label of a token the loss skips (the dataset's ignore_label_id, after loading): torch's
# cross-entropy default, which the model and the losses share.
IGNORE_LABEL = -100
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message names the file and the problem."""


@dataclass
class Metadata:
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int = 0
    sets: list[str] = field(default_factory=lambda: ["all"])

    @classmethod
    def from_json(cls, path: Path) -> Metadata:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: missing (is this a dataset folder? build one with tools/build_data.py)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: not valid JSON (or not UTF-8): {e}") from None
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(raw))
        if missing:
            raise DatasetError(f"{path}: missing fields {missing}")
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass
class Split:
    """One split in memory; inputs/labels may be memory-mapped."""

    meta: Metadata
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0] - 1)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_with(path, lambda f: np.save(f, array))  # shared on a cluster: the umask's mode, not 0600


def write_split(
    root: Path,
    split: str,
    meta: Metadata,
    inputs: np.ndarray,
    labels: np.ndarray,
    puzzle_identifiers: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
) -> None:
    """Write one split; token arrays are stored as uint8 when the vocabulary fits (as the reference does)."""
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    token_dtype = np.uint8 if meta.vocab_size <= 256 else np.int32
    arrays = {
        "inputs": np.asarray(inputs).astype(token_dtype),
        "labels": np.asarray(labels).astype(token_dtype),
        "puzzle_identifiers": np.asarray(puzzle_identifiers, dtype=np.int32),
        "puzzle_indices": np.asarray(puzzle_indices, dtype=np.int32),
        "group_indices": np.asarray(group_indices, dtype=np.int32),
    }
    meta = dataclasses.replace(
        meta, total_groups=len(arrays["group_indices"]) - 1, total_puzzles=len(arrays["puzzle_identifiers"])
    )
    for name, array in arrays.items():
        _atomic_save_npy(d / f"all__{name}.npy", array)
    atomic_write_text(d / "dataset.json", json.dumps(dataclasses.asdict(meta), indent=2))


def write_identifiers(root: Path, names: list[str]) -> None:
    atomic_write_text(Path(root) / "identifiers.json", json.dumps(names))


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError for torn or foreign files
        raise DatasetError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None


def read_split(root: str | Path, split: str, mmap: bool = True) -> Split:
    d = Path(root) / split
    if not Path(root).is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist (build it with tools/build_data.py)")
    if not d.is_dir():
        raise DatasetError(f"dataset folder '{root}' has no '{split}' split (expected {root}/{split}/dataset.json)")
    meta = Metadata.from_json(d / "dataset.json")
    if meta.sets != ["all"]:
        raise DatasetError(f"{d / 'dataset.json'}: sets={meta.sets}; only the single set 'all' is supported")
    arrays = {name: _load_npy(d / f"all__{name}.npy", mmap=name in ("inputs", "labels")) for name in FIELDS}
    return Split(meta=meta, **arrays)


def validate_split(root: str | Path, split: str) -> list[str]:
    """Every problem with one split, as readable lines (empty when it is fine)."""
    try:
        s = read_split(root, split)
    except DatasetError as e:
        return [str(e)]
    d = Path(root) / split
    m = s.meta
    problems: list[str] = []
    for name in ("inputs", "labels"):
        a = getattr(s, name)
        if a.ndim != 2 or a.shape[1] != m.seq_len:
            problems.append(f"{d}/all__{name}.npy: shape {a.shape}, expected [num_examples, seq_len={m.seq_len}]")
        if not np.issubdtype(a.dtype, np.integer):
            problems.append(f"{d}/all__{name}.npy: dtype {a.dtype}, expected an integer type")
    if s.inputs.shape[0] != s.labels.shape[0]:
        problems.append(f"{d}: inputs has {s.inputs.shape[0]} examples but labels has {s.labels.shape[0]}")
    for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        a = getattr(s, name)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            problems.append(f"{d}/all__{name}.npy: shape {a.shape} dtype {a.dtype}, expected a 1-D integer array")
    if problems:
        return problems
    pi, gi = s.puzzle_indices, s.group_indices
    if len(pi) != len(s.puzzle_identifiers) + 1:
        problems.append(
            f"{d}/all__puzzle_indices.npy: length {len(pi)}, expected num_puzzles + 1 = {len(s.puzzle_identifiers) + 1}"
        )
    for name, a, end in (("puzzle_indices", pi, s.num_examples), ("group_indices", gi, len(pi) - 1)):
        if len(a) == 0 or a[0] != 0 or a[-1] != end:
            problems.append(
                f"{d}/all__{name}.npy: must start at 0 and end at {end}, got {a[:1].tolist()}..{a[-1:].tolist()}"
            )
        elif np.any(np.diff(a) <= 0):
            bad = int(np.argmax(np.diff(a) <= 0))
            problems.append(
                f"{d}/all__{name}.npy: not strictly increasing at position {bad} "
                f"({a[bad]} then {a[bad + 1]}): every puzzle/group needs at least one member"
            )
    if m.total_groups != len(gi) - 1:
        problems.append(f"{d}/dataset.json: total_groups={m.total_groups} but group_indices holds {len(gi) - 1}")
    ids = s.puzzle_identifiers
    if len(ids) and (ids.min() < 0 or ids.max() >= m.num_puzzle_identifiers):
        problems.append(
            f"{d}/all__puzzle_identifiers.npy: ids in [{ids.min()}, {ids.max()}], expected "
            f"[0, num_puzzle_identifiers={m.num_puzzle_identifiers})"
        )
    for name in ("inputs", "labels"):
        a = np.asarray(getattr(s, name))
        if a.size and (a.min() < 0 or a.max() >= m.vocab_size):
            where = np.argwhere((a < 0) | (a >= m.vocab_size))[0].tolist()
            problems.append(
                f"{d}/all__{name}.npy: token {a[tuple(where)]} at example {where[0]}, position "
                f"{where[1]} is outside the vocabulary [0, {m.vocab_size})"
            )
    return problems


def validate_dataset(root: str | Path) -> list[str]:
    """Every problem with a dataset folder (both splits, identifiers.json), as readable lines."""
    root = Path(root)
    if not root.is_dir():
        return [f"dataset folder '{root}' does not exist"]
    problems = validate_split(root, "train") + validate_split(root, "test")
    ident = root / "identifiers.json"
    if ident.exists():
        try:
            names = json.loads(ident.read_text())
            if not isinstance(names, list):
                problems.append(f"{ident}: expected a JSON list of names")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(f"{ident}: not valid JSON (or not UTF-8): {e}")
    return problems


def check_dataset(root: str | Path) -> None:
    problems = validate_dataset(root)
    if problems:
        raise DatasetError(f"dataset '{root}' is not usable:\n  " + "\n  ".join(problems))
