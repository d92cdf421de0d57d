"""The per-puzzle embedding table and its sparse sign-SGD optimizer.

The table is a buffer, not a parameter: it can hold ~1M rows (ARC), so neither Adam state nor EMA
is kept for it. In training, the rows of the current slots are copied into a small leaf tensor
that collects the gradient; the optimizer then updates only those rows:
    w <- w * (1 - lr * wd) - lr * sign(sum of the row's gradients over all ranks)
("Adam is about sign-SGD when the gradient is very sparse", as the reference puts it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
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


def sum_per_slot(ids: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """For every slot, the sum of the gradients of all slots holding the same id, without a sync.

    Duplicate ids all take their first slot's row, so the rows written for one id are identical."""
    same = ids[:, None] == ids[None, :]  # (N, N)
    summed = same.to(grad.dtype) @ grad  # (N, D)
    first = same.to(torch.uint8).argmax(dim=1)  # the first slot with the same id
    return summed[first]


class SignSGD:
    """Sparse sign-SGD with decoupled weight decay on the touched rows only; all ranks end equal."""

    def __init__(self, emb: PuzzleEmbedding, lr: float, weight_decay: float) -> None:
        self.emb = emb
        self.lr = lr
        self.weight_decay = weight_decay

    @torch.no_grad()
    def step(self) -> None:
        grad = self.emb.local_weights.grad
        if grad is None:
            return
        ids = self.emb.local_ids
        if dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            all_grad = grad.new_empty((world * grad.shape[0], grad.shape[1]))
            all_ids = ids.new_empty((world * ids.shape[0],))
            dist.all_gather_into_tensor(all_grad, grad.contiguous())
            dist.all_gather_into_tensor(all_ids, ids.contiguous())
            grad, ids = all_grad, all_ids
        w = self.emb.weights
        if grad.is_cuda:
            # unique() has a data-dependent size, hence a host-device sync every step: sum per slot instead.
            ids, summed = ids, sum_per_slot(ids, grad)
        else:
            ids, inverse = ids.unique(return_inverse=True)
            summed = grad.new_zeros((ids.shape[0], grad.shape[1])).index_add_(0, inverse, grad)
        w[ids] = w[ids] * (1.0 - self.lr * self.weight_decay) - self.lr * summed.sign()

    def zero_grad(self) -> None:
        self.emb.local_weights.grad = None

    def state_dict(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.weight_decay = state["lr"], state["weight_decay"]
