#!/usr/bin/env python
"""The fault suite: what survives SIGKILLs, damaged checkpoints, a second trainer, an unwritable run
directory, killed jobs.txt runners and a collector reading a live run. Prints what was lost (must be
nothing) and whether the final state is bit-identical to an uninterrupted run.

    python bench/faults.py [--kills 10] [--seed 0] [--keep DIR]

Every fault runs the real trainer (`tools/train.py`, tiny 4x4 Sudoku config, one process on the CPU)
or the real queue runner (`tools/run_queue.py`) in child processes, as a user would start them:

1. kills     N SIGKILLs at random moments (a checkpoint every step, so many land mid-write), each
             followed by `train.resume=auto`, until the run is done; compared with a straight run.
2. damaged   the newest complete checkpoint truncated after its COMPLETE marker; the resume must
             fall back to the next one and still end bit-identical.
3. two       a second trainer on the same run directory while the first trains: refused.
4. readonly  the run directory made read-only mid-run (as another user when run as root): a clear
             message, and a heartbeat that says the run is dead.
5. queue     jobs.txt runners SIGKILLed mid-line with compound commands (`...; true`, `... | cat`):
             every line must run exactly once.
6. collect   the collector reading a run while it trains: no error, no lost row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = [
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=3",
    "arch.puzzle_emb_ndim=32",
    "arch.puzzle_emb_len=1",
    "arch.pos_encodings=learned",
    "train.global_batch_size=16",
    "eval.max_batches=2",
    "optim.lr=1e-3",
    "optim.lr_warmup_steps=5",
    "train.ema=true",
    "train.ema_rate=0.9",
    "log.log_interval=1",
    "log.progress=false",
]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def train_args(data: Path, root: Path, name: str, *extra: str) -> list[str]:
    return [
        PY,
        str(ROOT / "tools/train.py"),
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{data}]",
        f"run.root={root}",
        f"+run_name={name}",
        *extra,
    ]


def run(cmd: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def final_state(run_dir: Path) -> dict:
    from trm.train import checkpoint as ckpt

    newest = ckpt.latest(run_dir / "checkpoints", warn=False)
    return torch.load(newest / "state.pt", map_location="cpu", weights_only=False)


def metric_lines(run_dir: Path) -> dict[tuple[str, int], dict]:
    """Last line per (event, step), without the wall-clock fields (resumed steps may repeat a line)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        out[(e["event"], e["step"])] = {k: v for k, v in e.items() if k not in ("time_s", "train/samples_per_s")}
    return out


def compare(ref: Path, got: Path) -> tuple[bool, int]:
    """(final model, EMA and Adam moments bit-identical, metric lines of `ref` missing or different in `got`).
    `got` may have more lines: an eval where a stopped attempt ended (the straight run has none there)."""
    a, b = final_state(ref), final_state(got)
    same = a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    same &= all(torch.equal(x, y) for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]))
    for sa, sb in zip(a["adam"]["state"].values(), b["adam"]["state"].values()):
        same &= torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    la, lb = metric_lines(ref), metric_lines(got)
    return same, sum(1 for k in la if lb.get(k) != la[k])  # every line of the straight run, unchanged


def fault_kills(data: Path, root: Path, kills: int, rng: random.Random, steps: int) -> dict:
    extra = [
        f"train.max_steps={steps}",
        "train.epochs=100",
        "eval.eval_interval=50",
        "train.checkpoint_every_steps=1",
        "train.keep_checkpoints=2",
    ]
    res = run(train_args(data, root, "straight", *extra))
    assert res.returncode == 0, res.stderr[-2000:]
    cmd = train_args(data, root, "killed", *extra)
    done_kills = 0
    attempts = 0
    while True:
        attempts += 1
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done_kills < kills:
            # A few steps into this attempt, plus a random fraction of a step: with a checkpoint every
            # step, the kill often lands while the background writer is mid-file.
            ahead, killed = rng.randint(1, 4), False
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("train step"):
                    ahead -= 1
                    if ahead == 0:
                        time.sleep(rng.uniform(0.0, 0.3))
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                        break
            proc.wait()
            if killed and proc.returncode == -signal.SIGKILL:
                done_kills += 1
                continue
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode == 0:
            break
        raise RuntimeError(f"attempt {attempts} ended with {proc.returncode}: {(out or '')[-2000:]}")
    same, lost = compare(root / "straight", root / "killed")
    return {"SIGKILLs": done_kills, "attempts": attempts, "bit_identical": same, "metric_lines_lost": lost}


def fault_damaged(data: Path, root: Path, steps: int) -> dict:
    extra = [
        f"train.max_steps={steps}",
        "train.epochs=100",
        "eval.eval_interval=50",
        "train.checkpoint_every_steps=5",
        "train.keep_checkpoints=3",
    ]
    assert run(train_args(data, root, "ref", *extra)).returncode == 0
    half = [f"train.max_steps={steps // 2}", *extra[1:]]
    assert run(train_args(data, root, "damaged", *half)).returncode == 0
    from trm.train import checkpoint as ckpt

    newest = ckpt.latest(root / "damaged" / "checkpoints", warn=False)
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    res = run(train_args(data, root, "damaged", *extra))
    out = res.stdout + res.stderr
    same, lost = compare(root / "ref", root / "damaged")
    return {
        "damaged": newest.name,
        "named_in_warning": f"damaged checkpoint skipped: {newest}" in out,
        "exit_code": res.returncode,
        "traceback": "Traceback" in out,
        "bit_identical": same,
        "metric_lines_lost": lost,
    }


def fault_two(data: Path, root: Path) -> dict:
    cmd = train_args(data, root, "two", "train.epochs=2000", "eval.eval_interval=2000", "train.max_steps=300")
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (root / "two" / "metrics.jsonl").exists():
            time.sleep(0.05)
        second = run(cmd)
    finally:
        first.wait(timeout=1800)
    events = [json.loads(line) for line in (root / "two" / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "train"]
    return {
        "second_refused": second.returncode == 2 and "in use by another trainer" in second.stderr,
        "first_exit": first.returncode,
        "metric_lines": len(events),
        "duplicate_or_backward_steps": sum(1 for a, b in zip(steps, steps[1:]) if b <= a),
    }


def fault_readonly(data: Path) -> dict:
    from trm.train.runlock import dead_run_message

    tmp = Path(tempfile.mkdtemp(prefix="trm-faults-ro-"))
    os.chmod(tmp, 0o777)
    shutil.copytree(data, tmp / "data")
    for d, _, files in os.walk(tmp):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(Path(d) / f, 0o644)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    cmd = [*prefix, *train_args(tmp / "data", tmp / "runs", "ro", "train.epochs=2000", "eval.eval_interval=2000")]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**ENV, "HOME": str(tmp)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    run_dir = tmp / "runs" / "ro"
    try:
        while not (run_dir / "metrics.jsonl").exists() and proc.poll() is None:
            time.sleep(0.05)
        for d, _, files in os.walk(run_dir):
            for f in files:
                os.chmod(Path(d) / f, 0o444)
            os.chmod(d, 0o555)
        _, err = proc.communicate(timeout=1800)
        return {
            "exit_code": proc.returncode,
            "clear_message": "can no longer be written" in err,
            "traceback": "Traceback" in err,
            "heartbeat_says_dead": bool(dead_run_message(run_dir)),
        }
    finally:
        for d, _, _ in os.walk(tmp):
            os.chmod(d, 0o777)
        shutil.rmtree(tmp, ignore_errors=True)


WORK = """import pathlib, sys, time
line = sys.argv[1]
with open("starts.txt", "a") as f: f.write(line + "\\n")
time.sleep(float(sys.argv[2]))
with open("ends.txt", "a") as f: f.write(line + "\\n")
"""


def fault_queue(root: Path, rng: random.Random, lines: int = 8) -> dict:
    from trm.hpc.jobs_file import parse_jobs_text

    q = root / "queue"
    q.mkdir()
    (q / "work.py").write_text(WORK)
    tails = ["; true", " | cat", " && true"]
    (q / "jobs.txt").write_text(
        "".join(f"[ ] {PY} work.py {i} {rng.uniform(0.5, 2.0):.2f}{tails[i % 3]}\n" for i in range(lines))
    )
    killed = 0
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        jobs = parse_jobs_text((q / "jobs.txt").read_text())
        if all(j.state == "done" for j in jobs):
            break
        runner = subprocess.Popen(
            [PY, str(ROOT / "tools/run_queue.py"), "jobs.txt"],
            cwd=q,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            runner.wait(timeout=rng.uniform(0.5, 2.5))
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGKILL)  # mid-line, most of the time
            runner.wait()
            killed += 1
        time.sleep(0.2)
    starts = (q / "starts.txt").read_text().split()
    ends = (q / "ends.txt").read_text().split()
    return {
        "lines": lines,
        "runners_SIGKILLed": killed,
        "lines_started_twice": sum(1 for i in set(starts) if starts.count(i) > 1),
        "lines_never_finished": sum(1 for i in range(lines) if str(i) not in ends),
        "all_marked_done": all(j.state == "done" for j in parse_jobs_text((q / "jobs.txt").read_text())),
    }


def fault_collect(data: Path, root: Path) -> dict:
    import logging

    from trm.hpc.collect import RunEntry, SweepEntry, collect_sweep

    logging.getLogger("trm.hpc.collect").setLevel(logging.ERROR)  # "no eval metric yet" while it trains
    cmd = train_args(
        data,
        root / "live",
        "r",
        "train.epochs=200",
        "eval.eval_interval=20",
        "train.max_steps=600",
        "train.checkpoint_every_steps=10",
    )
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reads = errors = 0
    problems: set[str] = set()
    while proc.poll() is None:
        try:
            result = collect_sweep(SweepEntry("live", root / "live", [RunEntry("r", root / "live" / "r")]))
            reads += 1
            problems.update(p for row in result.rows for p in row.problems if "no summary.json yet" not in p)
        except Exception as e:  # noqa: BLE001 - counted: there must be none
            errors += 1
            problems.add(f"{type(e).__name__}: {e}")
        time.sleep(0.01)
    final = collect_sweep(SweepEntry("live", root / "live", [RunEntry("r", root / "live" / "r")])).rows[0]
    return {
        "reads_while_training": reads,
        "errors": errors,
        "problems_seen": sorted(problems)[:3],
        "final_state": final.state,
        "final_step": final.step,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps of the killed run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="keep the runs in this folder")
    p.add_argument("--only", nargs="+", choices=("kills", "damaged", "two", "readonly", "queue", "collect"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="trm-faults-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    data = root / "sudoku4"
    if not (data / "test" / "dataset.json").exists():
        res = run(
            [
                PY,
                str(ROOT / "tools/build_data.py"),
                "sudoku4x4",
                "--out",
                str(data),
                "--num-train",
                "200",
                "--num-test",
                "64",
                "--num-aug",
                "5",
            ]
        )
        assert res.returncode == 0, res.stderr
        # one puzzle id per group, so the sparse puzzle embedding (and its optimizer) is exercised too
        import numpy as np

        from trm.data.format import read_split, write_split

        for split in ("train", "test"):
            s = read_split(data, split, mmap=False)
            meta = s.meta
            meta.num_puzzle_identifiers = 41
            ids = 1 + np.repeat(np.arange(s.num_groups), np.diff(s.group_indices)) % 40
            write_split(data, split, meta, s.inputs, s.labels, ids, s.puzzle_indices, s.group_indices)
    faults = {
        "kills": lambda: fault_kills(data, root / "kills", args.kills, rng, args.steps),
        "damaged": lambda: fault_damaged(data, root / "damaged", args.steps),
        "two": lambda: fault_two(data, root / "two"),
        "readonly": lambda: fault_readonly(data),
        "queue": lambda: fault_queue(root, rng),
        "collect": lambda: fault_collect(data, root),
    }
    ok = True
    for name, fn in faults.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        figures = fn()
        good = (
            figures.get("bit_identical", True)
            and not figures.get("metric_lines_lost", 0)
            and not figures.get("traceback", False)
            and not figures.get("lines_started_twice", 0)
            and not figures.get("lines_never_finished", 0)
            and not figures.get("errors", 0)
            and figures.get("second_refused", True)
            and figures.get("heartbeat_says_dead", True)
            and not figures.get("duplicate_or_backward_steps", 0)
        )
        ok &= bool(good)
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        print(f"{name:9s} {'ok  ' if good else 'LOST'} {time.monotonic() - t0:6.1f} s | {shown}", flush=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print("nothing lost; final states bit-identical" if ok else "SOMETHING WAS LOST (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
