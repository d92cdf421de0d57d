"""The per-puzzle embedding table.

The table is a buffer, not a parameter: it can hold ~1M rows (ARC), so neither Adam state nor EMA
is kept for it. In training, the rows of the current slots are copied into a small leaf tensor
that collects the gradient; the sparse sign-SGD optimizer (trm.train.optim.SignSGD) then updates
only those rows.
"""

from __future__ import annotations

import torch
from torch import nn


class PuzzleEmbedding(nn.Module):
    def __init__(self, num_ids: int, dim: int, local_batch_size: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.zeros(num_ids, dim))  # zero init, as the reference
        # A fixed-shape leaf (not a fresh tensor per step) keeps the graph static for torch.compile.
        self.register_buffer("local_weights", torch.zeros(local_batch_size, dim, requires_grad=True), persistent=False)
        self.register_buffer("local_ids", torch.zeros(local_batch_size, dtype=torch.long), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[ids]
        if ids.shape[0] != self.local_weights.shape[0]:
            raise ValueError(
                f"puzzle embedding built for a local batch of {self.local_weights.shape[0]}, got {ids.shape[0]}"
            )
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights
