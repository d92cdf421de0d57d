"""AdamATan2 in plain torch, the LR schedule, and the EMA of parameters.

AdamATan2 (Everett et al. 2024, `imoneoi/adam-atan2`, whose CUDA kernel the reference imports) has no
epsilon: the Adam ratio m/sqrt(v) becomes atan2(m, sqrt(v)), bounded and scale-invariant.
    p <- p * (1 - lr * wd)
    m <- lerp(m, g, 1 - b1);  v <- lerp(v, g^2, 1 - b2)
    p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
The first bias correction stays outside atan2, as in the kernel the paper's runs used. Here it runs
on CPU, CUDA and MPS, with foreach kernels for everything but the atan2.
"""

from __future__ import annotations

import math

import torch


class AdamATan2(torch.optim.Optimizer):
    def __init__(
        self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0
    ) -> None:
        if lr < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamATan2: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

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
            if wd != 0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_lerp_(ms, grads, 1.0 - b1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
            step_size = lr / (1.0 - b1**t)
            denoms = torch._foreach_sqrt(vs)
            torch._foreach_div_(denoms, math.sqrt(1.0 - b2**t))
            for p, m, d in zip(params, ms, denoms):
                p.add_(torch.atan2(m, d), alpha=-step_size)
        return None


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
