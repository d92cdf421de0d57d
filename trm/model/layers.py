"""Building blocks of the TRM network, as the paper's code defines them.

Weights are kept in float32 and cast to the activations' dtype at each call (no autocast): the
forward dtype is carried by the residual stream, as in the reference (bf16 on GPU).
Shapes: B batch, S positions (puzzle prefix + tokens), D hidden, H heads, Dh head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """JAX-style truncated normal: truncated at +-2 std and rescaled so the realised std equals `std`.

    torch.nn.init.trunc_normal_ leaves the std smaller than asked (about 0.88x at +-2); the reference
    corrects it, and parameter statistics (hence the training curve) depend on that.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * upper**2), c * math.exp(-0.5 * lower**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b)
        tensor.erfinv_()
        tensor.mul_(sqrt2 * comp_std)
        tensor.clip_(lower * comp_std, upper * comp_std)
    return tensor


def rms_norm(x: torch.Tensor, eps: float, dim: int = -1) -> torch.Tensor:
    """RMSNorm without a gain parameter, computed in float32."""
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)).to(dtype)


class CastedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, init_std: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        # Named as in the reference, so its checkpoints load (see trm.train.init_weights).
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.dtype))


def _ceil_to(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def swiglu_hidden(dim: int, expansion: float) -> int:
    """The reference's intermediate size: 2/3 of expansion*dim, rounded up to a multiple of 256."""
    return _ceil_to(round(expansion * dim * 2 / 3), 256)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        inter = swiglu_hidden(dim, expansion)
        self.gate_up_proj = CastedLinear(dim, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class RotaryEmbedding(nn.Module):
    """Cached cos/sin tables, rotate-half convention, float32."""

    def __init__(self, head_dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # (S, Dh)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, S, H, Dh); the rotation runs in float32, as the reference does."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos[:, None, :], sin[:, None, :]  # (S, 1, Dh)
    return (x * cos + _rotate_half(x) * sin).to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention through SDPA, no biases."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv_proj = CastedLinear(dim, 3 * dim, bias=False)
        self.o_proj = CastedLinear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv_proj(x).view(B, S, 3, self.num_heads, self.head_dim).unbind(2)  # (B, S, H, Dh)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Post-norm block: a sequence mixer (attention, or the MLP-T token mixer) then a SwiGLU."""

    def __init__(self, dim: int, num_heads: int, expansion: float, seq_len: int, mlp_t: bool, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.token_mixing = mlp_t
        if mlp_t:
            # TRM-MLP mixes along the sequence axis; its norm is over that axis too.
            self.mlp_t = SwiGLU(seq_len, expansion)
        else:
            self.self_attn = Attention(dim, num_heads)
        self.mlp = SwiGLU(dim, expansion)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if self.token_mixing:
            t = h.transpose(1, 2)  # (B, D, S)
            h = rms_norm(t + self.mlp_t(t), self.eps).transpose(1, 2)
        else:
            h = rms_norm(h + self.self_attn(h, rope), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class ReasoningModule(nn.Module):
    """The single shared network: h <- blocks(h + injection)."""

    def __init__(self, layers: list[Block]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, h: torch.Tensor, injection: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, rope)
        return h
