"""The config tree: strict loading, the paper's names, overrides, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trm.config import ConfigError, config_diff, config_from_dict, config_hash, load_config, to_dict, to_yaml

ROOT = Path(__file__).resolve().parents[1]

SEED_COMMAND = (
    "arch=trm data_paths=[data/hanoi] evaluators=[] epochs=50000 eval_interval=5000 lr=1e-4 "
    "puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.mlp_t=True "
    "arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 global_batch_size=768 "
    "+run_name=pretrain_mlp_t_hanoi ema=True"
).split()


def test_the_seeds_command_line_works_unchanged():
    cfg = load_config(None, SEED_COMMAND)
    assert cfg.data.data_paths == ["data/hanoi"] and cfg.eval.evaluators == []
    assert (cfg.train.epochs, cfg.eval.eval_interval, cfg.train.global_batch_size) == (50000, 5000, 768)
    assert (cfg.optim.lr, cfg.optim.puzzle_emb_lr, cfg.optim.weight_decay) == (1e-4, 1e-4, 1.0)
    assert cfg.arch.mlp_t is True and cfg.arch.pos_encodings == "none"
    assert (cfg.arch.L_layers, cfg.arch.H_cycles, cfg.arch.L_cycles) == (2, 3, 6)
    assert cfg.run.name == "pretrain_mlp_t_hanoi" and cfg.train.ema is True
    assert load_config(None, ["arch.loss.loss_type=softmax_cross_entropy"]).arch.loss_type == "softmax_cross_entropy"


def test_yaml_then_overrides_later_wins(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("arch: {hidden_size: 64}\nlr: 0.5\ntrain: {ema: true}\n")
    cfg = load_config(f, ["arch.hidden_size=128", "train.ema=false"])
    assert cfg.arch.hidden_size == 128 and cfg.optim.lr == 0.5 and cfg.train.ema is False


@pytest.mark.parametrize(
    "override,needle",
    [
        ("arch.L_layer=3", "Valid keys in 'arch': arch.H_cycles"),
        ("nonsense=1", "Sections: arch, data, eval, log, optim, run, train"),
        ("arch.hidden_size=1.5", "arch.hidden_size: expected int"),
        ("optim.lr=fast", "optim.lr: expected float"),
        ("train.ema=maybe", "train.ema: expected bool"),
        ("arch.pos_encodings=sinusoid", "expected one of rope, learned, none"),
        ("arch=hrm", "arch='hrm' is not supported"),
        ("lr", "not of the form key=value"),
        ("arch.num_heads=3", "divisible by arch.num_heads"),
        ("train.keep_checkpoints=1", "train.keep_checkpoints must be >= 2"),
    ],
)
def test_bad_values_name_the_key_and_what_is_expected(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_yaml_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("arch: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml' is not valid YAML"):
        load_config(f)
    f.write_text("arch:\n  hidden_sise: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'arch.hidden_sise'"):
        load_config(f)


def test_round_trip_and_hash_ignore_runtime_keys():
    cfg = load_config(None, SEED_COMMAND)
    again = config_from_dict(yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)
    moved = load_config(None, [*SEED_COMMAND, "train.device=cpu", "log.wandb=offline", "+run_name=other"])
    assert config_hash(moved) == config_hash(cfg) and config_diff(cfg, moved) == []
    changed = load_config(None, [*SEED_COMMAND, "arch.L_cycles=4"])
    assert config_hash(changed) != config_hash(cfg)
    assert config_diff(cfg, changed) == ["arch.L_cycles: 6 -> 4"]


@pytest.mark.parametrize("path", sorted((ROOT / "trm" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.train.epochs % cfg.eval.eval_interval == 0
