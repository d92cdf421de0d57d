"""wandb for real, offline: rank 0 only, a stable run id so a resumed run continues it, no key on disk."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY, run_trainer

SECRET = "trm-test-secret-0123456789abcdef0123456789"


def test_offline_wandb_run_is_resumed_under_the_same_id_and_never_stores_the_key(sudoku4, tmp_path):
    args = [
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={tmp_path}",
        "+run_name=wb",
        "log.wandb=offline",
    ]
    env = {
        "WANDB_API_KEY": SECRET,
        "WANDB_DIR": "",
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
    }
    first = run_trainer([*args, "train.max_steps=6"], env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "wb"
    run_id = (run / "wandb_id").read_text().strip()
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), list((run / "wandb").iterdir())
    second = run_trainer([*args, "train.max_steps=10"], env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (run / "wandb_id").read_text().strip() == run_id
    assert len(sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one folder per attempt, same id
    for f in Path(tmp_path).rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
