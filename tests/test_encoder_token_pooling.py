"""encoder_pooling=token: a per-token-value table of the demos in the prefix (the few-shot bench's encoder)."""

from __future__ import annotations

import pytest
import torch

from trm.config import ArchConfig, ConfigError
from trm.model.encoders import build_encoder
from trm.model.trm import TRM

V, L, D = 6, 9, 16  # vocab: PAD 0, EOS 1, colours 2..5; 3x3 canvas
SLOTS = V - 1


def arch(**kw) -> ArchConfig:
    base = dict(
        hidden_size=D,
        num_heads=2,
        L_layers=1,
        H_cycles=1,
        L_cycles=1,
        halt_max_steps=2,
        puzzle_emb_ndim=0,
        puzzle_emb_len=SLOTS + 2,
        encoder_type="standard",
        encoder_pooling="token",
    )
    return ArchConfig(**{**base, **kw})


def demos(seed: int, colours: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pick = torch.tensor(colours)
    inputs = pick[torch.randint(0, len(colours), (2, 3, L), generator=g)]
    outputs = pick[torch.randint(0, len(colours), (2, 3, L), generator=g)]
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return inputs, outputs, mask


def test_prefix_is_the_token_table_then_the_set_tokens() -> None:
    torch.manual_seed(0)
    enc = build_encoder(arch(), V, L, 0, SLOTS + 2)
    enc.eval()
    out = enc(*demos(0, (2, 3)))
    assert out.context.shape == (2, SLOTS + 2, D) and out.demo_vectors.shape == (2, 3, D)
    other = enc(*demos(1, (2, 3)))
    # slots of values no demo shows (colours 4, 5) hold their learned default whatever the demos are;
    # the slots of the colours shown, and the set tokens, follow the demos
    absent = [4 - 1, 5 - 1]  # slot index = token value - 1 (PAD has no slot)
    torch.testing.assert_close(out.context[:, absent], other.context[:, absent])
    assert not torch.allclose(out.context[:, [1, 2]], other.context[:, [1, 2]])
    assert not torch.allclose(out.context[:, SLOTS:], other.context[:, SLOTS:])


def test_gradient_reaches_every_encoder_parameter() -> None:
    torch.manual_seed(0)
    model = TRM(arch(), vocab_size=V, seq_len=L, num_puzzle_ids=4, local_batch_size=2, dtype=torch.float32)
    di, dl, dm = demos(0, (2, 3, 4))
    batch = {
        "inputs": di[:, 0],
        "labels": dl[:, 0].long(),
        "puzzle_identifiers": torch.ones(2, dtype=torch.int32),
        "demo_inputs": di,
        "demo_labels": dl,
        "demo_mask": dm,
    }
    carry = model.initial_carry(batch)
    _, out = model(carry, batch)
    torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten()).backward()
    assert model.encoder is not None
    missing = [n for n, p in model.encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_token_pooling_only_where_it_fits() -> None:
    with pytest.raises(ConfigError, match="encoder_type=standard only, got lpn_standard"):
        build_encoder(arch(encoder_type="lpn_standard"), V, L, 0, SLOTS + 2)
    with pytest.raises(ConfigError, match=f"puzzle_emb_len must be >= {SLOTS}, got 3"):
        build_encoder(arch(puzzle_emb_len=3), V, L, 0, 3)
    enc = build_encoder(arch(puzzle_emb_len=SLOTS), V, L, 0, SLOTS)  # the table alone fills the prefix
    assert enc(*demos(0, (2, 3))).context.shape == (2, SLOTS, D)
