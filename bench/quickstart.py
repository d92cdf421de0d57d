#!/usr/bin/env python
"""Time the quick start from nothing: data build + training, in a fresh folder, as a new user runs it.

    python bench/quickstart.py [--seeds 0 1 2] [--target 0.95]

Prints, per seed, the wall time until the first evaluation at or above the target test exact accuracy
(process start to that eval, data build included), the final and best exact accuracy, and the total time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(seed: int, target: float, work: Path) -> dict:
    data, runs = work / f"data-{seed}", work / "runs"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "tools/build_data.py", "sudoku4x4", "--out", str(data)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    t_data = time.perf_counter() - t0
    proc = subprocess.Popen(
        [
            sys.executable,
            "tools/train.py",
            "trm/configs/quickstart.yaml",
            f"data_paths=[{data}]",
            f"run.root={runs}",
            f"+run_name=seed{seed}",
            f"train.seed={seed}",
            "log.progress=false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t_train0 = time.perf_counter()
    reached = None
    for line in proc.stdout:  # watch evals as they are printed, to time them on the wall clock
        if line.startswith("eval") and reached is None:
            exact = float(line.split("exact_accuracy ")[1].split()[0])
            if exact >= target:
                reached = time.perf_counter() - t0
    proc.wait()
    total = time.perf_counter() - t0
    summary = json.loads((runs / f"seed{seed}" / "summary.json").read_text())
    return {
        "seed": seed,
        "data_s": t_data,
        "train_start_s": t_train0 - t0,
        "reached_s": reached,
        "total_s": total,
        "final": summary["final"]["eval/exact_accuracy"],
        "best": summary["best"]["eval/exact_accuracy"]["value"],
        "steps": summary["step"],
        "samples_per_s": summary["samples_per_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--target", type=float, default=0.95)
    args = ap.parse_args()
    print(f"quick start on {os.cpu_count()} CPU cores, target test exact accuracy {args.target:.0%}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = one(seed, args.target, Path(tmp))
            reached = f"{r['reached_s']:.0f} s" if r["reached_s"] is not None else "not reached"
            print(
                f"seed {r['seed']}: target reached at {reached} (data {r['data_s']:.1f} s); final exact "
                f"{r['final']:.4f}, best {r['best']:.4f}; {r['steps']} steps, {r['samples_per_s']:.0f} samples/s; "
                f"total {r['total_s']:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
