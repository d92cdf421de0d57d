"""Demo encoders: one interface, gradients to every parameter in both ACT modes, KL in the loss,
parameter counts, and the errors for bad encoder settings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fewshot_data import make_rule_dataset

from trm.config import ArchConfig, ConfigError, load_config
from trm.data.fewshot import FewShotTrainIterator, read_num_demos
from trm.data.format import read_split
from trm.model.encoders import ENCODER_TYPES, build_encoder
from trm.model.layers import swiglu_hidden
from trm.model.trm import TRM, count_parameters
from trm.train.losses import act_loss

D, P = 32, 2


def arch(encoder_type: str, **kw) -> ArchConfig:
    base = dict(
        hidden_size=D,
        num_heads=2,
        L_layers=1,
        H_cycles=2,
        L_cycles=2,
        halt_max_steps=3,
        puzzle_emb_ndim=0,
        puzzle_emb_len=P,
        pos_encodings="learned",
        encoder_type=encoder_type,
    )
    return ArchConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    root = make_rule_dataset(tmp_path_factory.mktemp("rules") / "rules")
    s = read_split(root, "train")
    it = FewShotTrainIterator(s, read_num_demos(root, "train", len(s.puzzle_identifiers)), 4, 8, 0, 1, 0, 2)
    return next(iter(it.chunk_batches())).as_dict()


def model_for(encoder_type: str, **kw) -> TRM:
    torch.manual_seed(0)
    return TRM(
        arch(encoder_type, **kw), vocab_size=5, seq_len=4, num_puzzle_ids=20, local_batch_size=8, dtype=torch.float32
    )


def encoder_grads(model: TRM) -> dict[str, float]:
    return {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0) for n, p in model.encoder.named_parameters()}


@pytest.mark.parametrize("encoder_type", list(ENCODER_TYPES))
def test_original_mode_sends_gradient_to_every_encoder_parameter_every_step(encoder_type, batch):
    """Step 1 starts every slot; at step 2 no slot is new (the carry holds them all), yet the encoder,
    re-encoding the carried demos, still gets gradient (the cached variant gave it none)."""
    model = model_for(encoder_type, kl_weight=0.1)
    model.train()
    carry = model.initial_carry(batch)
    for step in (1, 2):
        carry, out = model(carry, batch)
        loss, _ = act_loss(carry, out, "softmax_cross_entropy", kl_weight=0.1)
        loss.backward()
        grads = encoder_grads(model)
        # The recurrent encoder's initial latent only reaches slots that start at this step.
        expect_zero = {"aggregate.queries"} if encoder_type == "recurrent" and step == 2 else set()
        assert [n for n, g in grads.items() if g == 0 and n not in expect_zero] == [], f"step {step}"
        model.zero_grad(set_to_none=True)
        carry = dataclasses.replace(carry, halted=torch.zeros_like(carry.halted))  # everyone continues


@pytest.mark.parametrize("encoder_type", list(ENCODER_TYPES))
def test_online_cycles_send_gradient_to_every_encoder_parameter(encoder_type, batch):
    model = model_for(encoder_type)
    model.train()
    carry = model.initial_carry(batch)
    seen: dict[str, float] = {}
    for _ in range(3):
        carry, out = model(carry, batch)
        carry = dataclasses.replace(carry, halted=torch.zeros_like(carry.halted))
        act_loss(carry, out, "softmax_cross_entropy")[0].backward()
        for n, g in encoder_grads(model).items():
            seen[n] = seen.get(n, 0.0) + g
        model.zero_grad(set_to_none=True)
    assert [n for n, g in seen.items() if g == 0] == []


def test_the_recurrent_encoder_refines_its_state_across_steps(batch):
    model = model_for("recurrent")
    carry = model.initial_carry(batch)
    carry, _ = model(carry, batch)
    first = carry.enc_state.clone()
    carry = dataclasses.replace(carry, halted=torch.zeros_like(carry.halted))
    carry, _ = model(carry, batch)
    assert not torch.allclose(first, carry.enc_state)
    assert carry.enc_state.requires_grad is False  # truncated BPTT: the carry holds no graph


@pytest.mark.parametrize("encoder_type", [t for t, spec in ENCODER_TYPES.items() if spec[2] != "none"])
def test_kl_changes_the_loss_when_its_weight_is_positive(encoder_type, batch):
    model = model_for(encoder_type)
    model.train()
    torch.manual_seed(1)
    carry, out = model(model.initial_carry(batch), batch)
    plain, metrics = act_loss(carry, out, "softmax_cross_entropy", kl_weight=0.0)
    weighted, _ = act_loss(carry, out, "softmax_cross_entropy", kl_weight=0.5)
    kl = metrics["kl_loss"]
    assert kl > 0
    assert weighted.item() == pytest.approx(plain.item() + 0.5 * kl.item(), rel=1e-6)
    # and the KL's gradient reaches the variance head
    weighted.backward()
    assert model.encoder.gaussian.logvar.bias.grad.abs().sum() > 0


def test_deterministic_encoders_report_zero_kl(batch):
    model = model_for("standard")
    carry, out = model(model.initial_carry(batch), batch)
    assert act_loss(carry, out, "softmax_cross_entropy", kl_weight=1.0)[1]["kl_loss"] == 0


def test_evaluation_uses_the_mean_of_variational_encoders(batch):
    model = model_for("variational")
    model.eval()
    a = model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
    b = model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
    assert torch.equal(a, b)
    model.train()
    c = model.encoder(batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]).context
    assert not torch.equal(a, c)


def test_context_ignores_padded_demo_slots(batch):
    """Demo slots beyond demo_mask do not change the context (the set is over the valid demos only)."""
    for encoder_type in ENCODER_TYPES:
        enc = model_for(encoder_type).encoder.eval()
        di, dl, dm = batch["demo_inputs"].clone(), batch["demo_labels"].clone(), batch["demo_mask"].clone()
        dm[:, -1] = False
        ref = enc(di, dl, dm).context
        di[:, -1], dl[:, -1] = 3, 4
        assert torch.allclose(ref, enc(di, dl, dm).context, atol=1e-6), encoder_type


def _block(dim: int) -> int:
    """One encoder block: q, kv, o projections and a SwiGLU (no biases, no norm gains)."""
    inter = swiglu_hidden(dim, 4.0)
    return 4 * dim * dim + 3 * dim * inter


def test_parameter_counts():
    V, L, layers = 5, 4, 2
    counts = {t: count_parameters(build_encoder(arch(t), V, L, 0, P)) for t in ENCODER_TYPES}
    print("\n".join(f"{t:>20}: {n:,}" for t, n in counts.items()))
    proj = D * D + D
    standard_grid = 2 * V * D + layers * _block(D) + proj
    lpn_grid = V * D + 2 * D + D + layers * _block(D) + proj
    set_agg = P * D + 1 * _block(D)
    mean_agg = D * P * D + P * D
    gaussian = 2 * (D * D + D)
    decode = D * P * D + P * D
    assert counts["standard"] == standard_grid + set_agg
    assert counts["variational"] == standard_grid + set_agg + gaussian + decode
    assert counts["lpn_standard"] == lpn_grid + mean_agg
    assert counts["lpn_variational"] == lpn_grid + mean_agg + gaussian
    assert counts["hybrid_standard"] == lpn_grid + set_agg
    assert counts["hybrid_variational"] == lpn_grid + set_agg + gaussian + decode
    assert counts["recurrent"] == counts["standard"]  # its state is the set encoder's queries, carried
    pooled = {
        p: count_parameters(build_encoder(arch("standard", encoder_pooling=p), V, L, 0, P))
        for p in ("attention", "weighted")
    }
    assert pooled["attention"] == counts["standard"] + D + 4 * D * D
    assert pooled["weighted"] == counts["standard"] + D + 1


def test_an_encoder_model_has_no_puzzle_table_and_a_trm_has_no_encoder():
    etrm = model_for("standard", puzzle_emb_ndim=512)
    assert etrm.inner.puzzle_emb is None and etrm.encoder is not None
    trm = model_for("none", puzzle_emb_ndim=D * P)
    assert trm.encoder is None and trm.inner.puzzle_emb is not None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("arch.encoder_type=transformer", "arch.encoder_type"),
        ("data.max_demos=0", "data.max_demos"),
        ("arch.num_act_steps=0", "arch.num_act_steps"),
        ("arch.encoder_norm_style=middle", "arch.encoder_norm_style"),
        ("arch.kl_weight=-1", "arch.kl_weight"),
    ],
)
def test_bad_encoder_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("trm/configs/quickstart.yaml", [override, "train.act_mode=online"])
    assert key in str(e.value)


def test_an_encoder_needs_a_prefix():
    with pytest.raises(ConfigError, match="arch.puzzle_emb_len"):
        build_encoder(arch("standard", puzzle_emb_len=0), 5, 4, 0, 0)


def test_seed_aliases_reach_the_encoder_keys():
    cfg = load_config(
        None,
        [
            "max_demos=5",
            "encoder_lr_scale=0.1",
            "freeze_decoder_steps=100",
            "arch.loss.kl_weight=1e-4",
            "load_pretrained_decoder=/x/step_518071",
            "arch.encoder_pooling_method=attention",
        ],
    )
    assert (cfg.data.max_demos, cfg.optim.encoder_lr_scale, cfg.train.freeze_decoder_steps) == (5, 0.1, 100)
    assert cfg.arch.kl_weight == 1e-4 and cfg.train.init_from == "/x/step_518071"
    assert cfg.arch.encoder_pooling == "attention"
