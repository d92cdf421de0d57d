"""Small ARC-like few-shot tasks for the laptop benchmark (bench/fewshot.py), in ARC's on-disk format.

    tasks = generate(FewShotSpec(seed=0))          # {"training": [...], "evaluation": [...]}
    write_kaggle(tasks, Path("data/fewshot-src"))  # arc-agi_{subset}_{challenges,solutions}.json

Each task draws one rule and applies it to every pair (3-4 demos, 1-2 queries, grids of min_size..max_size
per side, background 0 and 2-4 other colours):

    colour_map            a permutation of the task's colours (background kept, at least one colour moves)
    dihedral              one of the 7 non-identity transforms of trm.data.grids
    shift                 a cyclic shift of the grid by (dr, dc) in {-1, 0, 1}^2 \\ {(0, 0)}
    dihedral_colour_map   a dihedral transform followed by a colour mapping

Held-out rules: a seeded share of the 72 ordered colour pairs (a -> b, a != b, both non-background) is held
out. A training (and "seen") mapping moves colours only along kept pairs; a held-out mapping moves at least
one colour along a held-out pair, so no training output ever shows that pair and the only way to answer is
to read the mapping from the demos. Only colour maps and compositions have held-out versions: the 7
dihedral transforms and 8 shifts all occur in training. The evaluation subset holds both kinds; a task's
id says which (`seen-<rule>-NNNN`, `heldout-<rule>-NNNN`).

Every demo set shows every colour of the task, so a colour map is always readable from the demos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trm.data.grids import dihedral

RULES = ("colour_map", "dihedral", "shift", "dihedral_colour_map")
HELD_OUT_RULES = ("colour_map", "dihedral_colour_map")
COLOURS = tuple(range(1, 10))
SHIFTS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))
DIHEDRALS = tuple(range(1, 8))  # trm.data.grids.dihedral's non-identity transforms
ALL_PAIRS = tuple((a, b) for a in COLOURS for b in COLOURS if a != b)


@dataclass(frozen=True)
class FewShotSpec:
    seed: int = 0
    num_train: int = 2000  # training tasks
    num_seen: int = 100  # evaluation tasks whose rules come from the training distribution (new grids)
    num_heldout: int = 100  # evaluation tasks with held-out colour pairs
    min_size: int = 3
    max_size: int = 5
    min_demos: int = 3
    max_demos: int = 4
    min_queries: int = 1
    max_queries: int = 2
    min_colours: int = 2  # non-background colours per task
    max_colours: int = 4
    heldout_pair_fraction: float = 0.25
    rules: tuple[str, ...] = RULES
    # the transforms drawn by the geometric rules (a subset makes an easier first curriculum stage)
    shifts: tuple[tuple[int, int], ...] = SHIFTS
    dihedrals: tuple[int, ...] = DIHEDRALS

    def __post_init__(self) -> None:
        checks = [
            ("min_size", self.min_size, 1, 30),
            ("max_size", self.max_size, self.min_size, 30),
            ("min_demos", self.min_demos, 1, 20),
            ("max_demos", self.max_demos, self.min_demos, 20),
            ("min_queries", self.min_queries, 1, 10),
            ("max_queries", self.max_queries, self.min_queries, 10),
            ("min_colours", self.min_colours, 2, 9),
            ("max_colours", self.max_colours, self.min_colours, 9),
            ("num_train", self.num_train, 1, 10**7),
            ("num_seen", self.num_seen, 0, 10**7),
            ("num_heldout", self.num_heldout, 0, 10**7),
        ]
        for name, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise ValueError(f"fewshot spec: {name} must be in [{lo}, {hi}], got {value}")
        if not 0.0 < self.heldout_pair_fraction < 1.0:
            raise ValueError(f"fewshot spec: heldout_pair_fraction must be in (0, 1), got {self.heldout_pair_fraction}")
        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            raise ValueError(f"fewshot spec: rules must be a non-empty subset of {list(RULES)}, got {list(self.rules)}")
        shifts = [tuple(x) for x in self.shifts]
        if not shifts or any(x not in SHIFTS for x in shifts):
            raise ValueError(
                f"fewshot spec: shifts must be a non-empty subset of {list(SHIFTS)}, got {list(self.shifts)}"
            )
        if not self.dihedrals or any(t not in DIHEDRALS for t in self.dihedrals):
            raise ValueError(
                f"fewshot spec: dihedrals must be a non-empty subset of {list(DIHEDRALS)}, got {list(self.dihedrals)}"
            )
        if self.min_size * self.min_size < self.max_colours:
            raise ValueError(
                f"fewshot spec: a {self.min_size}x{self.min_size} grid cannot show {self.max_colours} "
                f"colours; raise min_size or lower max_colours"
            )


@dataclass
class Rule:
    kind: str
    tid: int = 0  # dihedral transform (0: none)
    shift: tuple[int, int] = (0, 0)
    mapping: np.ndarray = field(default_factory=lambda: np.arange(10))  # colour -> colour, identity elsewhere

    def apply(self, grid: np.ndarray) -> np.ndarray:
        out = dihedral(grid, self.tid)
        out = np.roll(out, self.shift, axis=(0, 1))
        return self.mapping[out].astype(np.uint8)

    def moved_pairs(self) -> set[tuple[int, int]]:
        return {(a, int(b)) for a, b in enumerate(self.mapping) if a != b}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tid": self.tid, "shift": list(self.shift), "mapping": self.mapping.tolist()}


@dataclass
class FewShotTask:
    id: str
    split: str  # train | seen | heldout
    rule: Rule
    demos: list[tuple[np.ndarray, np.ndarray]]
    queries: list[tuple[np.ndarray, np.ndarray]]

    def challenge(self) -> dict[str, Any]:
        return {
            "train": [{"input": i.tolist(), "output": o.tolist()} for i, o in self.demos],
            "test": [{"input": i.tolist()} for i, _ in self.queries],
        }

    def solutions(self) -> list[list[list[int]]]:
        return [o.tolist() for _, o in self.queries]


def heldout_pairs(spec: FewShotSpec) -> frozenset[tuple[int, int]]:
    """The held-out ordered colour pairs: a seeded share of the 72, drawn apart from the task stream."""
    rng = np.random.default_rng([spec.seed, 7])
    n = max(1, round(spec.heldout_pair_fraction * len(ALL_PAIRS)))
    idx = rng.choice(len(ALL_PAIRS), size=n, replace=False)
    return frozenset(ALL_PAIRS[i] for i in idx)


def _draw_mapping(
    rng: np.random.Generator, colours: np.ndarray, held: frozenset[tuple[int, int]], want_heldout: bool
) -> np.ndarray | None:
    """A non-identity permutation of `colours` that avoids the held pairs (or uses one); None if none found."""
    for _ in range(200):
        perm = rng.permutation(colours)
        if np.array_equal(perm, colours):
            continue
        mapping = np.arange(10)
        mapping[colours] = perm
        moved = {(int(a), int(b)) for a, b in zip(colours, perm) if a != b}
        if bool(moved & held) == want_heldout:
            return mapping
    return None


def _draw_rule(
    rng: np.random.Generator,
    spec: FewShotSpec,
    kind: str,
    colours: np.ndarray,
    held: frozenset[tuple[int, int]],
    heldout: bool,
) -> Rule | None:
    def tid() -> int:
        return int(spec.dihedrals[int(rng.integers(len(spec.dihedrals)))])

    if kind == "dihedral":
        return Rule(kind, tid=tid())
    if kind == "shift":
        dr, dc = spec.shifts[int(rng.integers(len(spec.shifts)))]
        return Rule(kind, shift=(int(dr), int(dc)))
    mapping = _draw_mapping(rng, colours, held, heldout)
    if mapping is None:
        return None
    return Rule(kind, tid=tid() if kind == "dihedral_colour_map" else 0, mapping=mapping)


def _draw_grid(rng: np.random.Generator, spec: FewShotSpec, colours: np.ndarray) -> np.ndarray:
    h, w = rng.integers(spec.min_size, spec.max_size + 1, size=2)
    cells = rng.choice(np.concatenate([[0], colours]), size=(h, w), p=None)
    return cells.astype(np.uint8)


def _draw_task(
    rng: np.random.Generator,
    spec: FewShotSpec,
    kind: str,
    held: frozenset[tuple[int, int]],
    heldout: bool,
    task_id: str,
    split: str,
) -> FewShotTask | None:
    colours = np.sort(
        rng.choice(COLOURS, size=int(rng.integers(spec.min_colours, spec.max_colours + 1)), replace=False)
    )
    rule = _draw_rule(rng, spec, kind, colours, held, heldout)
    if rule is None:
        return None
    num_demos = int(rng.integers(spec.min_demos, spec.max_demos + 1))
    num_queries = int(rng.integers(spec.min_queries, spec.max_queries + 1))
    inputs = [_draw_grid(rng, spec, colours) for _ in range(num_demos + num_queries)]
    pairs = [(g, rule.apply(g)) for g in inputs]
    if any(np.array_equal(i, o) for i, o in pairs):
        return None  # a pair the rule leaves unchanged tells nothing (symmetric grid, one-colour row ...)
    demo_colours = set(np.unique(np.concatenate([i.ravel() for i, _ in pairs[:num_demos]])).tolist())
    if not set(colours.tolist()) <= demo_colours:
        return None  # the demos must show every colour the queries may use
    return FewShotTask(task_id, split, rule, pairs[:num_demos], pairs[num_demos:])


def generate(spec: FewShotSpec) -> dict[str, list[FewShotTask]]:
    """Training and evaluation tasks; the same spec always gives the same tasks."""
    held = heldout_pairs(spec)
    rng = np.random.default_rng([spec.seed, 0])
    train_rules = spec.rules
    heldout_rules = tuple(r for r in spec.rules if r in HELD_OUT_RULES)
    if spec.num_heldout and not heldout_rules:
        raise ValueError(f"fewshot spec: held-out tasks need one of {list(HELD_OUT_RULES)} among the rules")

    def draw(n: int, rules: tuple[str, ...], heldout: bool, prefix: str, split: str) -> list[FewShotTask]:
        out: list[FewShotTask] = []
        while len(out) < n:
            kind = rules[len(out) % len(rules)]  # rule types in turn: equal counts per type
            task = _draw_task(rng, spec, kind, held, heldout, f"{prefix}{kind}-{len(out):05d}", split)
            if task is not None:
                out.append(task)
        return out

    train = draw(spec.num_train, train_rules, False, "train-", "train")
    seen = draw(spec.num_seen, train_rules, False, "seen-", "seen")
    heldout = draw(spec.num_heldout, heldout_rules, True, "heldout-", "heldout")
    return {"training": train, "evaluation": seen + heldout}


def write_kaggle(tasks: dict[str, list[FewShotTask]], folder: Path, spec: FewShotSpec | None = None) -> None:
    """`arc-agi_<subset>_{challenges,solutions}.json` per subset (what `build_data.py arc --input` reads),
    plus `fewshot_rules.json`: every task's split and rule, and the held-out pairs when `spec` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    rules: dict[str, Any] = {}
    for subset, items in tasks.items():
        (folder / f"arc-agi_{subset}_challenges.json").write_text(json.dumps({t.id: t.challenge() for t in items}))
        (folder / f"arc-agi_{subset}_solutions.json").write_text(json.dumps({t.id: t.solutions() for t in items}))
        for t in items:
            rules[t.id] = {"split": t.split, **t.rule.to_json()}
    manifest: dict[str, Any] = {"tasks": rules}
    if spec is not None:
        manifest["heldout_pairs"] = sorted(list(p) for p in heldout_pairs(spec))
    (folder / "fewshot_rules.json").write_text(json.dumps(manifest))


def task_split_and_rule(task_id: str) -> tuple[str, str]:
    """(split, rule kind) from a task id made by `generate`."""
    split, _, rest = task_id.partition("-")
    kind = rest.rsplit("-", 1)[0]
    if split not in ("train", "seen", "heldout") or kind not in RULES:
        raise ValueError(f"task id '{task_id}' is not '<train|seen|heldout>-<rule>-<n>'")
    return split, kind
