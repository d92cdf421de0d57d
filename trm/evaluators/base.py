"""The interface every evaluator implements (see trm/evaluators/__init__.py for how the trainer calls it)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Evaluator(Protocol):
    name: str  # the registry name; metrics are logged as eval/<name>/<key>

    def begin(self) -> None:
        """Forget everything from earlier evaluations."""

    def update(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        puzzle_identifiers: np.ndarray,
        preds: np.ndarray,
        q_halt_logits: np.ndarray,
    ) -> None:
        """Add a batch: inputs/labels/preds (B, seq_len), puzzle_identifiers (B,), q_halt_logits (B,)."""

    def result(self, out_dir: Path | None = None) -> dict[str, float]:
        """Metrics over everything since begin(); may write files (e.g. submission.json) into out_dir."""
