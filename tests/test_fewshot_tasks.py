"""The few-shot task generator: rules hold on every pair, held-out pairs stay out of training, seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trm.data import arc
from trm.data.fewshot_tasks import (
    HELD_OUT_RULES,
    RULES,
    FewShotSpec,
    generate,
    heldout_pairs,
    task_split_and_rule,
    write_kaggle,
)
from trm.data.grids import dihedral

SPEC = FewShotSpec(seed=3, num_train=400, num_seen=80, num_heldout=80)


@pytest.fixture(scope="module")
def tasks():
    return generate(SPEC)


def _expected(kind: str, rule, grid: np.ndarray) -> np.ndarray:
    """The rule written out independently of Rule.apply."""
    if kind == "shift":
        dr, dc = rule.shift
        h, w = grid.shape
        return np.array([[grid[(r - dr) % h, (c - dc) % w] for c in range(w)] for r in range(h)])
    g = dihedral(grid, rule.tid)
    return np.vectorize(lambda v: int(rule.mapping[v]))(g) if "colour_map" in kind else g


def test_rule_holds_on_every_pair(tasks) -> None:
    for t in tasks["training"] + tasks["evaluation"]:
        kind = t.rule.kind
        assert task_split_and_rule(t.id) == (t.split, kind)
        if kind == "dihedral":
            assert 1 <= t.rule.tid <= 7
        if kind == "shift":
            assert t.rule.shift != (0, 0)
        if "colour_map" in kind:
            assert t.rule.mapping[0] == 0 and t.rule.moved_pairs()
            used = set(np.unique(np.concatenate([i.ravel() for i, _ in t.demos])).tolist()) - {0}
            # a permutation of the task's own colours, every one of them shown by the demos
            assert {a for a, _ in t.rule.moved_pairs()} <= used
            assert {b for _, b in t.rule.moved_pairs()} <= used
        for inp, out in t.demos + t.queries:
            assert SPEC.min_size <= min(inp.shape) and max(inp.shape) <= SPEC.max_size
            np.testing.assert_array_equal(out, _expected(kind, t.rule, inp))
            assert not np.array_equal(inp, out)
        assert SPEC.min_demos <= len(t.demos) <= SPEC.max_demos
        assert SPEC.min_queries <= len(t.queries) <= SPEC.max_queries


def test_heldout_pairs_never_occur_in_training(tasks) -> None:
    held = heldout_pairs(SPEC)
    assert len(held) == 18  # a quarter of the 72 ordered colour pairs
    train_pairs: set[tuple[int, int]] = set()
    for t in tasks["training"]:
        train_pairs |= t.rule.moved_pairs()
    assert not train_pairs & held
    heldout = [t for t in tasks["evaluation"] if t.split == "heldout"]
    assert len(heldout) == SPEC.num_heldout
    assert {t.rule.kind for t in heldout} == set(HELD_OUT_RULES)
    for t in heldout:
        assert t.rule.moved_pairs() & held
        # and the exact pairs a held-out query needs were never shown by any training output
        assert not t.rule.moved_pairs() <= train_pairs
    seen = [t for t in tasks["evaluation"] if t.split == "seen"]
    assert {t.rule.kind for t in seen} == set(RULES)
    assert all(not t.rule.moved_pairs() & held for t in seen)


def test_deterministic_under_a_seed(tasks, tmp_path) -> None:
    again = generate(SPEC)
    write_kaggle(tasks, tmp_path / "a", SPEC)
    write_kaggle(again, tmp_path / "b", SPEC)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    other = generate(FewShotSpec(seed=4, num_train=400, num_seen=80, num_heldout=80))
    assert [t.challenge() for t in other["training"]] != [t.challenge() for t in tasks["training"]]


def test_written_tasks_load_as_arc(tasks, tmp_path) -> None:
    write_kaggle(tasks, tmp_path, SPEC)
    loaded = arc.load_kaggle_subset(tmp_path, "evaluation")
    assert sorted(loaded) == sorted(t.id for t in tasks["evaluation"])
    t = tasks["evaluation"][0]
    np.testing.assert_array_equal(loaded[t.id].test[0][1], t.queries[0][1])
    manifest = json.loads((tmp_path / "fewshot_rules.json").read_text())
    assert manifest["tasks"][t.id]["split"] == t.split
    assert len(manifest["heldout_pairs"]) == 18


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size must be in"):
        FewShotSpec(min_size=5, max_size=4)
    with pytest.raises(ValueError, match="rules must be a non-empty subset"):
        FewShotSpec(rules=("rotate",))
    with pytest.raises(ValueError, match="held-out tasks need one of"):
        generate(FewShotSpec(rules=("shift",), num_train=5, num_seen=1, num_heldout=1))
    with pytest.raises(ValueError, match=r"shifts must be a non-empty subset of \[\(-1, -1\)"):
        FewShotSpec(shifts=((0, 2),))
    with pytest.raises(ValueError, match=r"dihedrals must be a non-empty subset of \[1, 2, 3, 4, 5, 6, 7\], got \[\]"):
        FewShotSpec(dihedrals=())


def test_transform_subsets_limit_the_geometric_rules() -> None:
    """The curriculum's easier stage (bench/fewshot.py --curriculum-minutes) draws from the given transforms only."""
    spec = FewShotSpec(num_train=200, num_seen=20, num_heldout=20, shifts=((0, 1), (1, 0)), dihedrals=(1, 4))
    tasks = [t for items in generate(spec).values() for t in items]
    shifts = {t.rule.shift for t in tasks if t.rule.kind == "shift"}
    tids = {t.rule.tid for t in tasks if t.rule.kind in ("dihedral", "dihedral_colour_map")}
    assert shifts == {(0, 1), (1, 0)}
    assert tids == {1, 4}
    full = [t for items in generate(FewShotSpec(num_train=200, num_seen=20, num_heldout=20)).values() for t in items]
    assert len({t.rule.shift for t in full if t.rule.kind == "shift"}) == 8
    assert len({t.rule.tid for t in full if t.rule.kind == "dihedral"}) == 7
