"""ARC pass@K by voting over augmented predictions, as the reference's evaluator.

Each test row is mapped back to the original task through its identifier name (`task|||t{k}|||{perm}`):
crop the canvas (30x30, or the side the data was built with) to the grid, undo the dihedral transform and
the colour permutation. Rows whose inverted input is one of the task's test inputs vote for their inverted
prediction (demonstration rows do not match and are ignored). Per test input the distinct predictions are
ranked by (votes, mean sigmoid q_halt); pass@K counts it solved when the true output is among the top K.
A task scores the fraction of its test inputs solved; pass@K is the mean over all tasks in test_puzzles.json.

Difference from the reference: there `aggregated_voting=True` keeps votes across evaluations (pooling
checkpoints); here begin() clears them, so every evaluation scores only its own model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from trm.data import arc
from trm.data.format import DatasetError, Metadata
from trm.rundir import atomic_write_text

PASS_KS = (1, 2, 5, 10, 100, 1000)
SUBMISSION_K = 2


def _key(grid: np.ndarray) -> bytes:
    g = np.ascontiguousarray(grid, dtype=np.uint8)
    return np.array(g.shape, dtype=np.int32).tobytes() + g.tobytes()


def _load_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing; the ARC evaluator needs {what} (build the data with tools/build_data.py arc)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


class ARCEvaluator:
    name = "arc"

    def __init__(
        self, data_path: Path, meta: Metadata, pass_ks: tuple[int, ...] = PASS_KS, submission_k: int = SUBMISSION_K
    ) -> None:
        self.blank_id = meta.blank_identifier_id
        self.pass_ks = pass_ks
        self.submission_k = submission_k
        names = _load_json(data_path / "identifiers.json", "the identifier names")
        tasks = _load_json(data_path / "test_puzzles.json", "the evaluation tasks")
        if not isinstance(names, list) or not isinstance(tasks, dict):
            raise DatasetError(f"{data_path}: identifiers.json must be a list, test_puzzles.json an object")
        self.variants: dict[int, tuple[str, int, np.ndarray]] = {}
        for i, name in enumerate(names):
            if i == self.blank_id:
                continue
            try:
                task_id, tid, perm = arc.parse_name(name)
            except ValueError as e:
                raise DatasetError(f"{data_path / 'identifiers.json'}: entry {i}: {e}") from None
            if task_id in tasks:
                self.variants[i] = (task_id, tid, perm)
        # per task: its test inputs' keys (in order) and true outputs
        self.inputs: dict[str, dict[bytes, list[int]]] = {}
        self.outputs: dict[str, list[bytes]] = {}
        for task_id, raw in tasks.items():
            task = arc.task_from_json(task_id, raw, str(data_path / "test_puzzles.json"))
            by_key: dict[bytes, list[int]] = defaultdict(list)
            for k, (inp, _) in enumerate(task.test):
                by_key[_key(inp)].append(k)
            self.inputs[task_id] = dict(by_key)
            self.outputs[task_id] = [_key(out) for _, out in task.test]
        self.begin()

    def begin(self) -> None:
        # (task, test index) -> prediction key -> [votes, sum of q]; grids kept for the submission
        self.votes: dict[tuple[str, int], dict[bytes, list[float]]] = defaultdict(dict)
        self.grids: dict[bytes, np.ndarray] = {}

    def update(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        puzzle_identifiers: np.ndarray,
        preds: np.ndarray,
        q_halt_logits: np.ndarray,
    ) -> None:
        q = 1.0 / (1.0 + np.exp(-np.asarray(q_halt_logits, dtype=np.float64)))
        ids = np.asarray(puzzle_identifiers).tolist()
        keep = [r for r, i in enumerate(ids) if i in self.variants]  # drops blank padding, non-test tasks
        if not keep:
            return
        inputs, preds = np.asarray(inputs)[keep], np.asarray(preds)[keep]
        (ih, iw), (ph, pw) = arc.crop_sizes(inputs), arc.crop_sizes(preds)
        side = arc.canvas_side(inputs.shape[-1])
        inputs = inputs.reshape(-1, side, side) - arc.COLOUR_OFFSET
        preds = preds.reshape(-1, side, side) - arc.COLOUR_OFFSET
        for j, row in enumerate(keep):
            task_id, tid, perm = self.variants[ids[row]]
            inp = arc.invert_grid(inputs[j, : ih[j], : iw[j]], tid, perm)
            slots = self.inputs[task_id].get(_key(inp))
            if slots is None:  # a demonstration pair (encoder mode), not a test query
                continue
            pred = arc.invert_grid(preds[j, : ph[j], : pw[j]], tid, perm)
            pk = _key(pred)
            self.grids.setdefault(pk, pred)
            for k in slots:
                tally = self.votes[(task_id, k)].setdefault(pk, [0.0, 0.0])
                tally[0] += 1
                tally[1] += float(q[row])

    def ranked(self, task_id: str, k: int) -> list[bytes]:
        tallies = self.votes.get((task_id, k), {})
        return sorted(tallies, key=lambda p: (tallies[p][0], tallies[p][1] / tallies[p][0]), reverse=True)

    def result(self, out_dir: Path | None = None) -> dict[str, float]:
        solved = {kk: [] for kk in self.pass_ks}
        covered, total = 0, 0
        submission: dict[str, list[dict[str, list[list[int]]]]] = {}
        for task_id, outputs in self.outputs.items():
            per_k = {kk: 0 for kk in self.pass_ks}
            attempts = []
            for k, truth in enumerate(outputs):
                ranking = self.ranked(task_id, k)
                covered += bool(ranking)
                total += 1
                for kk in self.pass_ks:
                    per_k[kk] += truth in ranking[:kk]
                top = [self.grids[p].tolist() for p in ranking[: self.submission_k]]
                top += [[[0]]] * (self.submission_k - len(top))
                attempts.append({f"attempt_{i + 1}": g for i, g in enumerate(top)})
            submission[task_id] = attempts
            for kk in self.pass_ks:
                solved[kk].append(per_k[kk] / len(outputs))
        metrics = {f"pass@{kk}": float(np.mean(v)) if v else 0.0 for kk, v in solved.items()}
        metrics["coverage"] = covered / total if total else 0.0
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out_dir) / "submission.json", json.dumps(submission))
        return metrics
