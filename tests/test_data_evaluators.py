"""ARC pass@K voting and the Hanoi evaluator on hand-made predictions whose scores are known (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_arc import make_kaggle  # tests/ is on sys.path (pytest prepend import mode)

from trm.data import arc, hanoi
from trm.data.build import main
from trm.data.format import read_split, validate_dataset
from trm.evaluators import get_evaluator


@pytest.fixture(scope="module")
def arc_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("arc")
    out = tmp / "arc"
    kaggle = make_kaggle(tmp / "kaggle")
    assert main(["arc", "--input", str(kaggle), "--num-aug", "3", "--out", str(out)]) == 0
    return out


def _rows(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    test = read_split(data, "test")
    names = json.loads((data / "identifiers.json").read_text())
    ids = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    labels = np.asarray(test.labels).astype(np.int64)
    return np.asarray(test.inputs).astype(np.int64), labels, ids, names


def _query_index(data: Path, inputs: np.ndarray, names: list[str], ids: np.ndarray) -> list[tuple[str, int]]:
    """(task, test index) of every test row, found independently by decoding its input."""
    tasks = json.loads((data / "test_puzzles.json").read_text())
    out = []
    for row, ident in zip(inputs, ids):
        task_id, tid, perm = arc.parse_name(names[ident])
        grid = arc.invert_grid(arc.crop(row), tid, perm).tolist()
        out.append((task_id, [t["input"] for t in tasks[task_id]["test"]].index(grid)))
    return out


def _encode_as(grid: np.ndarray, name: str) -> np.ndarray:
    """`grid` (original colours) as the model would predict it for the variant `name`."""
    _, tid, perm = arc.parse_name(name)
    _, labels = arc.encode_pairs([(grid, grid)], np.array([tid]), perm[None], False, np.random.default_rng(0))
    return labels[0, 0].astype(np.int64)


def _evaluator(data: Path):
    return get_evaluator("arc", data, read_split(data, "test").meta)


def test_all_correct_scores_one(arc_data: Path, tmp_path: Path) -> None:
    inputs, labels, ids, _ = _rows(arc_data)
    ev = _evaluator(arc_data)
    ev.begin()
    ev.update(inputs, labels, ids, labels, np.zeros(len(ids)))
    result = ev.result(tmp_path)
    assert result["pass@1"] == 1.0 and result["coverage"] == 1.0
    sub = json.loads((tmp_path / "submission.json").read_text())
    tasks = json.loads((arc_data / "test_puzzles.json").read_text())
    for task_id, task in tasks.items():
        assert [a["attempt_1"] for a in sub[task_id]] == [t["output"] for t in task["test"]]
        assert all(a["attempt_2"] == [[0]] for a in sub[task_id])  # only one distinct prediction


def test_votes_rank_by_count_then_confidence(arc_data: Path, tmp_path: Path) -> None:
    inputs, labels, ids, names = _rows(arc_data)
    where = _query_index(arc_data, inputs, names, ids)
    wrong = np.full((2, 2), 3)  # one wrong answer, the same after undoing every variant
    preds = labels.copy()
    q = np.zeros(len(ids))
    rows_b0 = [r for r, w in enumerate(where) if w == ("eval0001", 0)]
    assert len(rows_b0) == 4  # original + 3 variants
    for r in rows_b0[:3]:  # 3 of 4 votes wrong: pass@1 fails, pass@2 finds the truth
        preds[r] = _encode_as(wrong, names[ids[r]])
    ev = _evaluator(arc_data)
    ev.begin()
    ev.update(inputs, labels, ids, preds, q)
    result = ev.result()
    # eval0000: 1/1 solved; eval0001: 1 of 2 test inputs at K=1, 2 of 2 at K=2
    assert result["pass@1"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["pass@2"] == 1.0 and result["pass@1000"] == 1.0

    # a 2-2 tie is broken by the mean sigmoid(q_halt)
    preds_tie = labels.copy()
    for r in rows_b0[:2]:
        preds_tie[r] = _encode_as(wrong, names[ids[r]])
    q_tie = np.zeros(len(ids))
    q_tie[rows_b0[:2]] = 3.0  # the wrong answer is more confident
    ev.begin()
    ev.update(inputs, labels, ids, preds_tie, q_tie)
    assert ev.result()["pass@1"] == pytest.approx(0.75)
    q_tie[rows_b0[:2]] = -3.0
    ev.begin()
    ev.update(inputs, labels, ids, preds_tie, q_tie)
    assert ev.result()["pass@1"] == 1.0


def test_begin_clears_votes_and_padding_rows_are_ignored(arc_data: Path) -> None:
    inputs, labels, ids, _ = _rows(arc_data)
    ev = _evaluator(arc_data)
    ev.begin()
    ev.update(inputs, labels, ids, labels, np.zeros(len(ids)))
    ev.begin()
    blank = np.zeros_like(ids)  # rows carrying the blank identifier are padding
    ev.update(inputs, labels, blank, labels, np.zeros(len(ids)))
    result = ev.result()
    assert result["pass@1"] == 0.0 and result["coverage"] == 0.0


def test_partial_evaluation_counts_unseen_tasks_as_unsolved(arc_data: Path) -> None:
    inputs, labels, ids, names = _rows(arc_data)
    keep = np.array([names[i].startswith("eval0000") for i in ids])
    ev = _evaluator(arc_data)
    ev.begin()
    ev.update(inputs[keep], labels[keep], ids[keep], labels[keep], np.zeros(keep.sum()))
    result = ev.result()
    assert result["pass@1"] == 0.5 and result["coverage"] == pytest.approx(1 / 3)


def test_registry_names(arc_data: Path, tmp_path: Path) -> None:
    meta = read_split(arc_data, "test").meta
    assert get_evaluator("arc", arc_data, meta).name == "arc"
    assert get_evaluator("hanoi", tmp_path, meta).name == "hanoi"


def test_unknown_evaluator_lists_names(arc_data: Path) -> None:
    with pytest.raises(ValueError, match="valid names: arc, fewshot, hanoi"):
        get_evaluator("sudoku", arc_data, read_split(arc_data, "test").meta)


# ---------------------------------------------------------------------------------------------- Hanoi


@pytest.mark.parametrize("encoding", ["action", "state"])
def test_hanoi_labels_replay_to_the_goal(tmp_path: Path, encoding: str) -> None:
    out = tmp_path / "h"
    assert (
        main(
            [
                "hanoi",
                "--encoding",
                encoding,
                "--train-min",
                "2",
                "--train-max",
                "3",
                "--test-min",
                "4",
                "--test-max",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert validate_dataset(out) == []
    test = read_split(out, "test")
    assert test.meta.vocab_size == (4 + 4 if encoding == "action" else 4) and test.meta.seq_len == 32
    inputs, labels = np.asarray(test.inputs), np.asarray(test.labels)
    assert len(inputs) == 6 * 15
    # replay each (source, target) episode through the simulator using only the labels' moves
    for episode in range(6):
        rows = range(episode * 15, episode * 15 + 15)
        state, target = hanoi.decode_state(inputs[rows[0]])
        for r in rows:
            assert np.array_equal(hanoi.decode_state(inputs[r])[0], state)
            disk, dest = hanoi.decode_move(state, labels[r], encoding)
            state = hanoi.apply_move(state, disk, dest)
        assert np.all(state == target)


def test_simulator_rules() -> None:
    s = np.array([1, 1, 2])  # disks 0 and 1 on peg 1 (0 on top), disk 2 on peg 2
    assert np.array_equal(hanoi.apply_move(s, 0, 3), [3, 1, 2])
    for disk, dest, rule in (
        (1, 3, "under a smaller disk"),
        (2, 1, "holds a smaller disk"),
        (0, 1, "already on peg"),
        (5, 1, "does not exist"),
        (0, 4, "does not exist"),
    ):
        with pytest.raises(hanoi.IllegalMove, match=rule):
            hanoi.check_move(s, disk, dest)
    states, moves = hanoi.solve(5, 1, 3)
    assert len(moves) == 31 and np.all(states[-1] == 3)


@pytest.mark.parametrize("encoding", ["action", "state"])
def test_hanoi_evaluator_scores_and_legality(tmp_path: Path, encoding: str) -> None:
    out = tmp_path / "h"
    assert (
        main(
            [
                "hanoi",
                "--encoding",
                encoding,
                "--train-min",
                "2",
                "--train-max",
                "2",
                "--test-min",
                "3",
                "--test-max",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    test = read_split(out, "test")
    inputs = np.asarray(test.inputs).astype(np.int64)
    raw = np.asarray(test.labels).astype(np.int64)
    labels = np.where(raw == 0, -100, raw)  # as the trainer hands them over (ignore_label_id 0 -> -100)
    ev = get_evaluator("hanoi", out, test.meta)
    ev.begin()
    ev.update(inputs, labels, np.zeros(len(inputs), np.int64), raw.copy(), np.zeros(len(inputs)))
    perfect = ev.result()
    assert perfect["exact_accuracy"] == 1.0 and perfect["token_accuracy"] == 1.0
    assert perfect["legal_move_rate"] == 1.0 and perfect["exact_accuracy_3_disks"] == 1.0

    # corrupt every other row with a move of the largest disk, which is illegal in all but a few states
    preds = raw.copy()
    bad = np.arange(0, len(preds), 2)
    expect_legal = 0
    for r in range(len(preds)):
        state, _ = hanoi.decode_state(inputs[r])
        if r in set(bad.tolist()):
            big, dest = len(state) - 1, 1 + (int(state[-1]) % 3)
            if encoding == "action":
                preds[r, 0], preds[r, 1] = hanoi.DISK_OFFSET + big, dest
            else:
                preds[r, : len(state)] = state
                preds[r, big] = dest
            try:
                hanoi.check_move(state, big, dest)
                expect_legal += 1
            except hanoi.IllegalMove:
                pass
        else:
            expect_legal += 1
    ev.begin()
    ev.update(inputs, labels, np.zeros(len(inputs), np.int64), preds, np.zeros(len(inputs)))
    result = ev.result()
    assert result["legal_move_rate"] == pytest.approx(expect_legal / len(preds))
    assert result["legal_move_rate"] < 0.75
    assert result["exact_accuracy"] == pytest.approx(1 - len(bad) / len(preds), abs=0.02)
    assert result["token_accuracy"] < 1.0
