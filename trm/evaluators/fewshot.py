"""The few-shot benchmark's scores (bench/fewshot.py): ARC voting, split by held-out status and rule type.

Task ids made by trm.data.fewshot_tasks say each evaluation task's split (`seen`: rules from the training
distribution on new grids; `heldout`: colour pairs never in training) and rule type. Per group
`<split>` and `<split>/<rule>`:

    exact   share of query rows (every augmentation counted) whose whole canvas is right
    cell    share of the query grids' cells predicted right (the EOS frame and padding not counted)
    pass@1, pass@2   ARC voting over the augmentations of each query (trm.evaluators.arc), task mean

Demonstration rows of the test split (encoder mode) and blank padding are not scored.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from trm.data import arc
from trm.data.fewshot_tasks import task_split_and_rule
from trm.data.format import DatasetError, Metadata
from trm.evaluators.arc import ARCEvaluator, _key
from trm.model.trm import IGNORE_LABEL


class FewShotEvaluator(ARCEvaluator):
    name = "fewshot"

    def __init__(self, data_path: Path, meta: Metadata) -> None:
        super().__init__(data_path, meta, pass_ks=(1, 2), submission_k=2)
        self.groups: dict[str, list[str]] = {}
        for task_id in self.outputs:
            try:
                split, rule = task_split_and_rule(task_id)
            except ValueError as e:
                raise DatasetError(
                    f"{data_path}: the fewshot evaluator needs a dataset from bench/fewshot.py ({e})"
                ) from None
            self.groups[task_id] = [split, f"{split}/{rule}"]

    def begin(self) -> None:
        super().begin()
        # group -> [rows, exact rows, right cells, cells]
        self.rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])

    def update(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        puzzle_identifiers: np.ndarray,
        preds: np.ndarray,
        q_halt_logits: np.ndarray,
    ) -> None:
        super().update(inputs, labels, puzzle_identifiers, preds, q_halt_logits)
        inputs, labels, preds = np.asarray(inputs), np.asarray(labels), np.asarray(preds)
        ids = np.asarray(puzzle_identifiers).tolist()
        side = arc.canvas_side(inputs.shape[-1])
        ih, iw = arc.crop_sizes(inputs)
        for row, i in enumerate(ids):
            if i not in self.variants:
                continue
            task_id, tid, perm = self.variants[i]
            grid = inputs[row].reshape(side, side)[: ih[row], : iw[row]] - arc.COLOUR_OFFSET
            if _key(arc.invert_grid(grid, tid, perm)) not in self.inputs[task_id]:
                continue  # a demonstration pair
            scored = labels[row] != IGNORE_LABEL
            cells = scored & (labels[row] >= arc.COLOUR_OFFSET) & (labels[row] < arc.VOCAB_SIZE)
            right = preds[row] == labels[row]
            for g in self.groups[task_id]:
                tally = self.rows[g]
                tally[0] += 1
                tally[1] += bool(right[scored].all())
                tally[2] += int(right[cells].sum())
                tally[3] += int(cells.sum())

    def result(self, out_dir: Path | None = None) -> dict[str, float]:
        out = super().result(out_dir)
        per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for task_id, outputs in self.outputs.items():
            for kk in self.pass_ks:
                solved = sum(truth in self.ranked(task_id, k)[:kk] for k, truth in enumerate(outputs))
                for g in self.groups[task_id]:
                    per_task[g][f"pass@{kk}"].append(solved / len(outputs))
        for g, scores in per_task.items():
            for name, values in scores.items():
                out[f"{g}/{name}"] = float(np.mean(values))
        for g, (rows, exact, right, cells) in self.rows.items():
            out[f"{g}/exact"] = exact / rows if rows else 0.0
            out[f"{g}/cell"] = right / cells if cells else 0.0
        return out
