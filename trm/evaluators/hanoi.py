"""Tower of Hanoi: token and exact accuracy over supervised (non-PAD) positions, and move legality.

Legality replays the predicted move (action encoding) or the move implied by the predicted next state
(state encoding) through the simulator in trm.data.hanoi. Exact accuracy is also split by disk count, the
axis along which the test set is out of distribution (train 3-6 disks, test 7-10 by default).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from trm.data import hanoi
from trm.data.format import IGNORE_LABEL, Metadata


def detect_encoding(data_path: Path, meta: Metadata) -> str:
    """The builder's --encoding from build_info.json; else by vocabulary (4 = state), as the seeds did."""
    info = data_path / "build_info.json"
    if info.is_file():
        enc = json.loads(info.read_text()).get("args", {}).get("encoding")
        if enc in ("action", "state"):
            return enc
    return "state" if meta.vocab_size == 4 else "action"


class HanoiEvaluator:
    name = "hanoi"

    def __init__(self, data_path: Path, meta: Metadata) -> None:
        self.encoding = detect_encoding(data_path, meta)
        self.pad_id = meta.pad_id
        self.begin()

    def begin(self) -> None:
        self.tokens = self.correct_tokens = self.rows = self.exact = self.legal = 0
        self.by_disks: dict[int, list[int]] = defaultdict(lambda: [0, 0])

    def update(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        puzzle_identifiers: np.ndarray,
        preds: np.ndarray,
        q_halt_logits: np.ndarray,
    ) -> None:
        labels = np.asarray(labels)
        mask = (labels != IGNORE_LABEL) & (labels != self.pad_id)
        hit = (np.asarray(preds) == labels) & mask
        row_exact = hit.sum(axis=1) == mask.sum(axis=1)
        self.tokens += int(mask.sum())
        self.correct_tokens += int(hit.sum())
        self.rows += len(labels)
        self.exact += int(row_exact.sum())
        for row in range(len(labels)):
            state, _ = hanoi.decode_state(inputs[row])
            tally = self.by_disks[len(state)]
            tally[0] += 1
            tally[1] += int(row_exact[row])
            try:
                disk, dest = hanoi.decode_move(state, preds[row], self.encoding)
                hanoi.check_move(state, disk, dest)
                self.legal += 1
            except hanoi.IllegalMove:
                pass

    def result(self, out_dir: Path | None = None) -> dict[str, float]:
        rows = max(self.rows, 1)
        metrics = {
            "token_accuracy": self.correct_tokens / max(self.tokens, 1),
            "exact_accuracy": self.exact / rows,
            "legal_move_rate": self.legal / rows,
        }
        for n in sorted(self.by_disks):
            seen, exact = self.by_disks[n]
            metrics[f"exact_accuracy_{n}_disks"] = exact / seen
        return metrics
