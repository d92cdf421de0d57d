"""Attention blocks of the demo encoders: masked self/cross attention, pre- or post-norm.

Shapes: N demos (B*K), T tokens per demo, Q query tokens, D hidden, H heads, Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trm.model.layers import CastedLinear, SwiGLU, apply_rope, rms_norm


class MaskedAttention(nn.Module):
    """Multi-head attention of x over `memory` (x itself when None); `key_mask` (N, T) False = ignore."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj = CastedLinear(dim, dim, bias=False)
        self.kv_proj = CastedLinear(dim, 2 * dim, bias=False)
        self.o_proj = CastedLinear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        free_first: bool = False,
    ) -> torch.Tensor:
        """`free_first`: the first position (a CLS token) reads every key unrotated, so that what it
        gathers does not depend on where a cell sits (RoPE would make it a token at position 0)."""
        mem = x if memory is None else memory
        N, Q, D = x.shape
        T = mem.shape[1]
        q = self.q_proj(x).view(N, Q, self.num_heads, self.head_dim)
        k, v = self.kv_proj(mem).view(N, T, 2, self.num_heads, self.head_dim).unbind(2)
        q0, k0 = q[:, :1], k
        if rope is not None:  # self-attention only: queries and keys share positions
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None
        if key_mask is not None:
            # A row with no valid key (a padded item) attends to everything rather than producing NaN.
            safe = key_mask | ~key_mask.any(-1, keepdim=True)
            mask = safe[:, None, None, :]  # (N, 1, 1, T)
        v = v.transpose(1, 2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v, attn_mask=mask)
        if free_first and rope is not None:
            first = F.scaled_dot_product_attention(q0.transpose(1, 2), k0.transpose(1, 2), v, attn_mask=mask)
            out = torch.cat((first, out[:, :, 1:]), dim=2)
        return self.o_proj(out.transpose(1, 2).reshape(N, Q, D))


class EncoderBlock(nn.Module):
    """Attention (self, or cross onto `memory`) then a SwiGLU; `norm_style` pre (x + f(norm x)) or post
    (norm(x + f(x)), as the TRM blocks)."""

    def __init__(self, dim: int, num_heads: int, expansion: float, norm_style: str, eps: float) -> None:
        super().__init__()
        self.pre, self.eps = norm_style == "pre", eps
        self.attn = MaskedAttention(dim, num_heads)
        self.mlp = SwiGLU(dim, expansion)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        free_first: bool = False,
    ) -> torch.Tensor:
        if self.pre:
            m = None if memory is None else rms_norm(memory, self.eps)
            x = x + self.attn(rms_norm(x, self.eps), m, key_mask, rope, free_first)
            return x + self.mlp(rms_norm(x, self.eps))
        x = rms_norm(x + self.attn(x, memory, key_mask, rope, free_first), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)
