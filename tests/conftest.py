"""Shared fixtures: small datasets built by the real builders, and a runner for the trainer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from waits import limit

ROOT = Path(__file__).resolve().parents[1]

# Tiny trainer settings shared by the trainer tests: a few seconds per run on 2 CPU cores.
TINY = [
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=3",
    "arch.puzzle_emb_ndim=0",
    "arch.puzzle_emb_len=0",
    "arch.pos_encodings=learned",
    "train.global_batch_size=16",
    "train.epochs=10",
    "eval.eval_interval=5",
    "eval.max_batches=2",
    "optim.lr=1e-3",
    "optim.lr_warmup_steps=5",
    "train.ema=true",
    "train.ema_rate=0.9",
    "log.log_interval=5",
    "log.progress=false",
]


@pytest.fixture(scope="session")
def sudoku4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 4x4 Sudoku dataset (200 train groups x 6 puzzles, 64 test puzzles)."""
    from trm.data.build import main as build

    out = tmp_path_factory.mktemp("data") / "sudoku4"
    assert build(["sudoku4x4", "--out", str(out), "--num-train", "200", "--num-test", "64", "--num-aug", "5"]) == 0
    return out


@pytest.fixture(scope="session")
def repo_sudoku4() -> Path:
    """The quick start's own data/sudoku-4x4 in the checkout (built once; the builder is a no-op when it
    is already there), for tests whose jobs run in other processes the way a user's would."""
    from trm.data.build import main as build

    data = ROOT / "data" / "sudoku-4x4"
    if not (data / "test" / "dataset.json").exists():
        assert build(["sudoku4x4", "--out", str(data)]) == 0
    return data


@pytest.fixture(scope="session")
def sudoku4_puzzle_emb(tmp_path_factory: pytest.TempPathFactory, sudoku4: Path) -> Path:
    """The same data with one puzzle identifier per group, so the sparse puzzle embedding trains."""
    import shutil

    import numpy as np

    from trm.data.format import read_split, write_split

    out = tmp_path_factory.mktemp("data") / "sudoku4-ids"
    shutil.copytree(sudoku4, out)
    for split in ("train", "test"):
        s = read_split(out, split, mmap=False)
        group_of_puzzle = np.repeat(np.arange(s.num_groups), np.diff(s.group_indices))
        ids = 1 + group_of_puzzle % 40
        meta = s.meta
        meta.num_puzzle_identifiers = 41
        write_split(out, split, meta, s.inputs, s.labels, ids, s.puzzle_indices, s.group_indices)
    return out


def run_trainer(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300, nproc: int = 1
) -> subprocess.CompletedProcess:
    """The trainer CLI in a child process (torchrun when nproc > 1), as a user would start it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(ROOT / "tools" / "train.py"),
            *args,
        ]
    else:
        cmd = [sys.executable, str(ROOT / "tools" / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=limit(timeout))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(
    args: list[str], nproc: int, env: dict[str, str] | None = None, script: Path | None = None
) -> list[subprocess.Popen]:
    """N trainer processes (or N of `script`) with torchrun's variables set by hand, as a scheduler's
    tasks (srun, blaunch) would start them; unlike torchrun, each keeps its own exit code."""
    port = str(free_port())
    procs = []
    for rank in range(nproc):
        penv = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            **(env or {}),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script or ROOT / "tools" / "train.py"), *args],
                cwd=ROOT,
                env=penv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=limit(timeout))
        out.append((p.returncode, text))
    return out
