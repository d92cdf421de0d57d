"""Task-specific evaluators that turn test-split predictions into metrics (ARC pass@K voting, Hanoi legality).

    ev = get_evaluator("arc", "data/arc1concept-aug-1000", meta)
    ev.begin()
    ev.update(inputs, labels, puzzle_identifiers, preds, q_halt_logits)   # numpy, real rows only, any order
    metrics = ev.result(out_dir)                                          # e.g. {"pass@1": 0.41, ...}

`update` takes global rows (the trainer gathers them on rank 0 and strips batch padding); labels carry -100
at ignored positions. `begin` clears everything, so each evaluation is scored on its own predictions.
"""

from __future__ import annotations

from pathlib import Path

from trm.data.format import Metadata
from trm.evaluators.base import Evaluator

NAMES = ("arc", "fewshot", "hanoi")


def get_evaluator(name: str, data_path: str | Path, meta: Metadata) -> Evaluator:
    """The evaluator called `name` for the dataset at `data_path` (whose test split has metadata `meta`)."""
    if name == "arc":
        from trm.evaluators.arc import ARCEvaluator

        return ARCEvaluator(Path(data_path), meta)
    if name == "fewshot":
        from trm.evaluators.fewshot import FewShotEvaluator

        return FewShotEvaluator(Path(data_path), meta)
    if name == "hanoi":
        from trm.evaluators.hanoi import HanoiEvaluator

        return HanoiEvaluator(Path(data_path), meta)
    raise ValueError(f"unknown evaluator '{name}'; valid names: {', '.join(NAMES)}")


__all__ = ["Evaluator", "NAMES", "get_evaluator"]
