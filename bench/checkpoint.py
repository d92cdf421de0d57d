#!/usr/bin/env python
"""Checkpoint cost of the full training state for the paper's Sudoku and Maze configs.

    python bench/checkpoint.py [--configs sudoku maze] [--batch 768]

Builds the real Trainer on synthetic data of the right shapes, fills the state a long run has
(Adam moments, EMA, a full ACT carry of the global batch), then prints: state size on disk, how long
a save stalls the training thread (the snapshot; the write runs in the background), the background
write time, the time a training step takes while a write is in flight vs. alone (small model, to see
the contention), and the load (resume) time. Target: stall < 1 s for Maze on this machine, so a
checkpoint every few minutes costs < 1% of training time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trm.config import load_config
from trm.data.synthetic import write_random_dataset
from trm.train import checkpoint as ckpt
from trm.train.dist import DistEnv
from trm.train.loop import Trainer

SHAPES = {"sudoku": ("trm/configs/sudoku.yaml", 11, 81), "maze": ("trm/configs/maze.yaml", 6, 900)}


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def bench(name: str, batch: int, work: Path) -> None:
    cfg_path, vocab, seq_len = SHAPES[name]
    data = work / f"data-{name}"
    write_random_dataset(data, vocab, seq_len, num_ids=1, num_train=batch + 8, num_test=batch + 8)
    over = [
        f"data_paths=[{data}]",
        f"run.root={work}/runs",
        f"+run_name={name}",
        f"train.global_batch_size={batch}",
        "train.epochs=10",
        "eval.eval_interval=10",
        "log.progress=false",
        "train.device=cpu",
    ]
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    t = Trainer(load_config(cfg_path, over), env)
    # The state of a long run: Adam moments and EMA filled, a carry for every slot.
    for p in t.params:
        p.grad = torch.randn_like(p) * 1e-3
    t.step = 1000
    t._set_lr()
    t.adam.step()
    t.ema.update()
    S = seq_len + t.model.inner.prefix
    D = t.cfg.arch.hidden_size
    first = next(t.iterator.chunk_batches())
    t.carry = t.model.initial_carry(first.as_dict())
    t.carry.z_H = torch.randn(batch, S, D, dtype=t.dtype)
    t.carry.z_L = torch.randn(batch, S, D, dtype=t.dtype)
    t._t_start = time.monotonic()

    stalls = []
    for i in range(3):
        t.step = 1000 + i
        t0 = time.perf_counter()
        t.save_checkpoint()
        stalls.append(time.perf_counter() - t0)
        t.checkpoints.writer.join()
    write_s = t.checkpoints.writer.last_write_s
    newest = ckpt.latest(t.run_dir.checkpoints)
    size = du(newest)

    t.close()  # one trainer per run directory: free it for the resuming one
    t1 = time.perf_counter()
    t2 = Trainer(load_config(cfg_path, over), env)  # resume=auto finds the checkpoint
    with_resume = time.perf_counter() - t1
    t2.close()
    shutil.rmtree(t.run_dir.path)
    t1 = time.perf_counter()
    Trainer(load_config(cfg_path, over), env).close()
    fresh = time.perf_counter() - t1
    assert t2.step == 1002
    print(
        f"{name:>6}: {t.num_params / 1e6:.2f}M params, batch {batch}, carry {tuple(t.carry.z_H.shape)} x2 "
        f"{str(t.dtype).removeprefix('torch.')}; checkpoint {size:,.0f} MiB; save stalls training "
        f"{np.median(stalls) * 1000:.0f} ms (median of 3); background write {write_s:.2f} s; "
        f"load+resume {with_resume - fresh:.2f} s",
        flush=True,
    )
    every = 5 * 60
    print(
        f"{'':>6}  a checkpoint every {every // 60} min costs {np.median(stalls) / every:.3%} of training time "
        f"in stalls",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["sudoku", "maze"], choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=768)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for name in args.configs:
            bench(name, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
