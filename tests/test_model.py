"""The TRM core against the reference's facts: sizes, initialisation, recursion, ACT behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from trm.config import ArchConfig
from trm.model.layers import Block, SwiGLU, rms_norm, swiglu_hidden, trunc_normal_init_
from trm.model.trm import TRM, count_parameters


def build(vocab: int, seq_len: int, **arch) -> TRM:
    torch.manual_seed(0)
    return TRM(ArchConfig(**arch), vocab, seq_len, num_puzzle_ids=1, local_batch_size=4, dtype=torch.float32)


@pytest.mark.parametrize(
    "name,vocab,seq_len,arch,expected",
    [
        # The paper's Sudoku TRM-MLP: 5,028,866 (the reference notes; Table 1's "5M").
        ("sudoku-mlp", 11, 81, dict(mlp_t=True, pos_encodings="none", L_layers=2), 5_028_866),
        # Table 1's "w/ 4 layers, n=3": four 2,508,288-parameter blocks ("10M").
        ("sudoku-mlp-4-layers", 11, 81, dict(mlp_t=True, pos_encodings="none", L_layers=4, L_cycles=3), 10_045_442),
        # Maze TRM-Att: two 3,407,872-parameter blocks + embeddings and heads ("7M").
        ("maze-att", 6, 900, dict(L_layers=2, L_cycles=4), 6_822_914),
        ("maze-att-4-layers", 6, 900, dict(L_layers=4, L_cycles=3), 13_638_658),
    ],
)
def test_parameter_counts_match_the_reference(name, vocab, seq_len, arch, expected):
    assert count_parameters(build(vocab, seq_len, **arch)) == expected, name


def test_block_sizes_match_the_reference_notes():
    assert count_parameters(Block(512, 8, 4.0, 97, mlp_t=False, eps=1e-5)) == 3_407_872
    assert count_parameters(Block(512, 8, 4.0, 97, mlp_t=True, eps=1e-5)) == 2_508_288
    assert count_parameters(Block(512, 8, 4.0, 916, mlp_t=True, eps=1e-5)) == 9_394_176
    assert count_parameters(SwiGLU(97, 4.0)) == 148_992
    assert [swiglu_hidden(d, 4.0) for d in (512, 97, 916)] == [1536, 512, 2560]


def test_truncated_normal_has_the_requested_std_and_bounds():
    torch.manual_seed(0)
    t = trunc_normal_init_(torch.empty(200_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    assert t.abs().max().item() <= 2 * 0.5 * 1.2  # clipped near 2 std (of the corrected std)


def test_rms_norm_has_no_gain_and_unit_rms():
    x = torch.randn(3, 5, 64) * 7
    y = rms_norm(x, 1e-5)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)
    assert not [p for p in Block(64, 4, 4.0, 5, False, 1e-5).named_parameters() if "norm" in p[0]]


def test_mlp_t_block_normalises_over_the_sequence_axis():
    block = Block(16, 2, 4.0, 8, mlp_t=True, eps=1e-5)
    with torch.no_grad():
        block.mlp.down_proj.weight.zero_()  # isolate the token-mixing half
        h = block(torch.randn(2, 8, 16), None)
    assert torch.allclose(h.pow(2).mean(-1), torch.ones(2, 8), atol=1e-3)  # the last norm is over D
    t = rms_norm(torch.randn(2, 16, 8), 1e-5)
    assert torch.allclose(t.pow(2).mean(-1), torch.ones(2, 16), atol=1e-3)


def test_heads_and_states_are_initialised_as_the_reference():
    m = build(11, 81, puzzle_emb_ndim=512)
    inner = m.inner
    assert torch.all(inner.q_head.weight == 0) and torch.all(inner.q_head.bias == -5)
    assert torch.all(inner.puzzle_emb.weights == 0)
    assert not any(n.endswith(("H_init", "L_init")) for n, _ in m.named_parameters())
    assert abs(inner.embed_tokens.embedding_weight.std().item() - 1 / math.sqrt(512)) < 0.003
    assert inner.prefix == 16
    keys = set(m.state_dict())
    assert {
        "inner.H_init",
        "inner.L_init",
        "inner.puzzle_emb.weights",
        "inner.L_level.layers.0.self_attn.qkv_proj.weight",
    } <= keys
    assert "inner.puzzle_emb.local_weights" not in keys


def _batch(n: int, start: int, seq_len: int = 6, vocab: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(start)
    inputs = torch.randint(1, vocab, (n, seq_len), generator=g, dtype=torch.int32)
    return {"inputs": inputs, "labels": inputs.long(), "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}


def test_carry_persists_and_only_halted_slots_are_refilled():
    m = build(5, 6, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, puzzle_emb_len=0, halt_max_steps=3)
    m.train()
    a, b, c = _batch(4, 1), _batch(4, 2), _batch(4, 3)
    carry = m.initial_carry(a)
    carry, _ = m(carry, a)
    assert torch.equal(carry.inputs, a["inputs"]) and carry.steps.tolist() == [1] * 4
    carry, _ = m(carry, b)  # nothing halted (q_halt ~ -5): b's rows are dropped
    assert torch.equal(carry.inputs, a["inputs"])
    carry, _ = m(carry, b)
    assert carry.halted.all() and carry.steps.tolist() == [3] * 4
    carry, _ = m(carry, c)
    assert torch.equal(carry.inputs, c["inputs"]) and carry.steps.tolist() == [1] * 4


def test_q_halt_halts_in_training_but_not_in_eval_unless_asked():
    m = build(5, 6, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, puzzle_emb_len=0, halt_max_steps=4)
    with torch.no_grad():
        m.inner.q_head.bias.fill_(5.0)  # q_halt > 0 everywhere
    a = _batch(4, 1)
    m.train()
    carry, _ = m(m.initial_carry(a), a)
    assert carry.halted.all()
    # exploration forces a minimum number of steps on the chosen slots
    explore = (torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([3, 2, 3, 3], dtype=torch.int32))
    carry, _ = m(m.initial_carry(a), a, explore)
    assert carry.halted.tolist() == [False, False, True, True]
    carry, _ = m(carry, a, explore)
    assert carry.halted.tolist() == [False, True, True, True]
    m.eval()
    carry, _ = m(m.initial_carry(a), a)
    assert not carry.halted.any()
    carry, _ = m(m.initial_carry(a), a, halt_early=True)
    assert carry.halted.all()


def test_q_continue_variant_trains():
    """The paper's "w/ ACT" ablation: the reference's TRM file crashes on this path."""
    from trm.train.losses import act_loss

    m = build(
        5, 6, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, puzzle_emb_len=0, halt_max_steps=3, no_ACT_continue=False
    )
    with torch.no_grad():  # at init both logits are constants and the bootstrap target equals them
        m.inner.q_head.weight.normal_(0, 0.5)
    m.train()
    a = _batch(4, 1)
    carry, out = m(m.initial_carry(a), a)
    assert out.target_q_continue is not None and out.target_q_continue.shape == (4,)
    assert torch.all((out.target_q_continue > 0) & (out.target_q_continue < 1))
    loss, metrics = act_loss(carry, out, "stablemax_cross_entropy")
    loss.backward()
    assert "q_continue_loss" in metrics and metrics["q_continue_loss"] > 0
    assert m.inner.q_head.weight.grad[1].abs().sum() > 0  # the continue logit now gets a gradient


def test_only_the_last_cycle_keeps_a_graph():
    """Gradients flow through L_cycles + 1 calls only: the first H_cycles - 1 cycles run without grad."""
    m = build(5, 6, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, puzzle_emb_len=0, H_cycles=3, L_cycles=2)
    calls = []
    m.inner.L_level.register_forward_hook(lambda mod, args, out: calls.append(out.requires_grad))
    a = _batch(2, 1)
    m.train()
    m(m.initial_carry(a), a)
    assert calls == [False] * 6 + [True] * 3


def test_puzzle_embedding_fills_prefix_slot_zero_only():
    m = build(5, 6, hidden_size=16, num_heads=2, puzzle_emb_ndim=16, puzzle_emb_len=3, pos_encodings="none")
    with torch.no_grad():
        m.inner.puzzle_emb.weights.fill_(1.0)
    m.eval()
    x = m.inner.input_embeddings(torch.ones(2, 6, dtype=torch.int32), torch.zeros(2, dtype=torch.long))
    assert x.shape == (2, 9, 16)
    assert torch.allclose(x[:, 0], torch.full((2, 16), 4.0))  # sqrt(16) * 1
    assert torch.all(x[:, 1:3] == 0)
