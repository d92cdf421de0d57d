"""The optimizers (AdamATan2, the puzzle table's sparse sign-SGD), the LR schedule, and the EMA.

AdamATan2 (Everett et al. 2024, `imoneoi/adam-atan2`, whose CUDA kernel the reference imports) has no
epsilon: the Adam ratio m/sqrt(v) becomes atan2(m, sqrt(v)), bounded and scale-invariant.
    p <- p * (1 - lr * wd)
    m <- lerp(m, g, 1 - b1);  v <- lerp(v, g^2, 1 - b2)
    p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
The first bias correction stays outside atan2, as in the kernel the paper's runs used. Here it runs
on CPU, CUDA and MPS. By default the update is multi-tensor (`torch._foreach_*`: one kernel launch
per operation for all parameters of a group, which is what matters on a GPU, where TRM's many small
tensors make the per-parameter launches the cost); torch has no foreach atan2, so that one op runs per
tensor. `foreach=False` is the plain per-parameter loop, kept as the readable definition: both give
identical parameters (tests/test_losses_optim.py).

SignSGD updates only the puzzle-embedding rows of the current slots (trm.model.puzzle_emb):
    w <- w * (1 - lr * wd) - lr * sign(sum of the row's gradients over all ranks)
("Adam is about sign-SGD when the gradient is very sparse", as the reference puts it).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from trm.model.puzzle_emb import PuzzleEmbedding


class AdamATan2(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
        foreach: bool = True,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamATan2: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, wd = group["lr"], group["weight_decay"]
            b1, b2 = group["betas"]
            grads, ms, vs = [], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            # All params of a group share the step count (they are created together).
            t = float(self.state[params[0]]["step"])
            step_size = lr / (1.0 - b1**t)
            bias2 = math.sqrt(1.0 - b2**t)
            if self.foreach:
                self._foreach_update(params, grads, ms, vs, lr * wd, b1, b2, step_size, bias2)
            else:
                for p, g, m, v in zip(params, grads, ms, vs):
                    if wd != 0:
                        p.mul_(1.0 - lr * wd)
                    m.lerp_(g, 1.0 - b1)
                    v.lerp_(g * g, 1.0 - b2)
                    p.add_(torch.atan2(m, v.sqrt().div_(bias2)), alpha=-step_size)
        return None

    @staticmethod
    def _foreach_update(
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        ms: list[torch.Tensor],
        vs: list[torch.Tensor],
        decay: float,
        b1: float,
        b2: float,
        step_size: float,
        bias2: float,
    ) -> None:
        if decay != 0:
            torch._foreach_mul_(params, 1.0 - decay)
        torch._foreach_lerp_(ms, grads, 1.0 - b1)
        torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
        denoms = torch._foreach_sqrt(vs)
        torch._foreach_div_(denoms, bias2)
        updates = [torch.atan2(m, d) for m, d in zip(ms, denoms)]
        torch._foreach_add_(params, updates, alpha=-step_size)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warmup then cosine to min_ratio * base_lr (min_ratio=1: constant, the reference's setting)."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))


class EMA:
    """Exponential moving average of the trainable parameters (buffers are not averaged)."""

    def __init__(self, params: list[torch.nn.Parameter], rate: float) -> None:
        self.rate = rate
        self.params = params
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.rate)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call again to swap back); no copy of the model needed."""
        for p, s in zip(self.params, self.shadow):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> dict:
        return {"rate": self.rate, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.rate = state["rate"]
        with torch.no_grad():
            for s, saved in zip(self.shadow, state["shadow"]):
                s.copy_(saved)


def sum_per_slot(ids: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """For every slot, the sum of the gradients of all slots holding the same id, without a sync.

    Duplicate ids all take their first slot's row, so the rows written for one id are identical."""
    same = ids[:, None] == ids[None, :]  # (N, N)
    summed = same.to(grad.dtype) @ grad  # (N, D)
    first = same.to(torch.uint8).argmax(dim=1)  # the first slot with the same id
    return summed[first]


# torch 2.13 renamed all_gather_into_tensor (with a FutureWarning every call); older releases lack the new name.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


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
            _all_gather(all_grad, grad.contiguous())
            _all_gather(all_ids, ids.contiguous())
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
