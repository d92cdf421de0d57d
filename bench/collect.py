"""How long the collector takes over many run directories (target: 1000 runs in under 2 seconds).

    python bench/collect.py                      # 1000 synthetic runs, 200 train + 10 eval lines each
    python bench/collect.py --runs 5000 --train-lines 1300

Writes synthetic run directories (config.yaml, summary.json, metrics.jsonl, status.json as
docs/run-directory.md describes them) into a temporary folder, then times reading them into rows and
writing the CSV; plots are not part of the figure. The files were just written, so the page cache is
warm: this measures the collector, not the disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import trm
from trm.config import load_config, to_yaml
from trm.hpc.collect import collect_sweep, sweep_from_folder, write_csv

EVAL_KEYS = ("eval/exact_accuracy", "eval/accuracy", "eval/q_halt_accuracy", "eval/steps", "eval/lm_loss")


def write_runs(root: Path, num_runs: int, train_lines: int, eval_lines: int) -> None:
    base = Path(trm.__file__).parent / "configs" / "quickstart.yaml"
    configs = [to_yaml(load_config(base, [f"arch.L_layers={n}"])) for n in (1, 2, 4)]
    for i in range(num_runs):
        run_dir = root / f"run-{i:05d}"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(configs[i % 3])
        lines = []
        eval_every = max(1, train_lines // max(1, eval_lines))
        for k in range(1, train_lines + 1):
            step = 50 * k
            lines.append(
                {
                    "event": "train",
                    "step": step,
                    "epoch": step / 16,
                    "time_s": step * 0.2,
                    "train/loss": 1.0 / k,
                    "train/accuracy": 1 - 1.0 / k,
                    "train/lr": 1e-3,
                }
            )
            if k % eval_every == 0 and len([x for x in lines if x["event"] == "eval"]) < eval_lines:
                acc = min(1.0, 0.3 + 0.6 * k / train_lines + 0.0001 * i)
                lines.append(
                    {
                        "event": "eval",
                        "step": step,
                        "epoch": step / 16,
                        "time_s": step * 0.2,
                        **dict(zip(EVAL_KEYS, (acc, (1 + acc) / 2, 0.9, 3.5, 1 - acc))),
                    }
                )
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        last = lines[-1]
        summary = {
            "run_name": run_dir.name,
            "state": "done",
            "step": last["step"],
            "total_steps": last["step"],
            "epoch": last["epoch"],
            "num_params": 123456,
            "wall_time_s": last["time_s"],
            "gpu_hours": last["time_s"] / 3600,
            "attempts": 1,
            "final": {},
            "best": {},
            "updated_at": "2026-01-01T00:00:00Z",
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        status = {
            "state": "done",
            "attempts": 1,
            "preemptions": 0,
            "timeouts": 0,
            "job_ids": [str(i)],
            "scheduler": "local",
            "log_paths": [],
            "submitted_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
        (run_dir / "status.json").write_text(json.dumps(status))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--train-lines", type=int, default=200)
    p.add_argument("--eval-lines", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench_sweep"
        root.mkdir()
        write_runs(root, args.runs, args.train_lines, args.eval_lines)
        times, cpu_times = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = collect_sweep(sweep_from_folder(root, baseline="run-00000"))
            write_csv(result, Path(tmp) / "bench_sweep.csv")
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        assert len(result.rows) == args.runs and not any(r.problems for r in result.rows)
    median = statistics.median(times)
    # CPU time too: on a shared machine the wall time also counts other processes' turns.
    print(
        f"collect {args.runs} run dirs ({args.train_lines} train + {args.eval_lines} eval lines each) "
        f"into a CSV: median {median:.2f} s wall, {statistics.median(cpu_times):.2f} s CPU over "
        f"{args.repeats} (min {min(times):.2f} s wall); target < 2 s: {'ok' if median < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
