"""tools/run_queue.py: several runners share one jobs.txt; every line runs once; dead runners' lines
are reclaimed; exit 75 puts a line back; a real training line runs to its summary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from waits import limit

from trm.hpc.jobs_file import parse_jobs_text
from trm.hpc.queue import QueueRunner

REPO = Path(__file__).resolve().parents[1]
QUEUE = [sys.executable, str(REPO / "tools" / "run_queue.py")]
HOST = socket.gethostname().split(".")[0]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_three_runners_run_every_line_exactly_once(tmp_path: Path) -> None:
    lines = [f"[ ] echo {i} >> out.txt; sleep 0.05" for i in range(12)]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# twelve lines\n" + "\n".join(lines) + "\n")
    runners = [subprocess.Popen([*QUEUE, str(jobs), "--gpu", str(k)], stdout=subprocess.DEVNULL) for k in range(3)]
    assert [r.wait(timeout=limit(120)) for r in runners] == [0, 0, 0]
    assert sorted(int(x) for x in (tmp_path / "out.txt").read_text().split()) == list(range(12))
    assert [j.state for j in parse_jobs_text(jobs.read_text())] == ["done"] * 12
    assert jobs.read_text().startswith("# twelve lines\n[x] echo 0 >> out.txt")


def test_failures_gpu_and_reclaim(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        f"[-] echo reclaimed >> out.txt [{HOST}:{dead_pid()}]\n"  # its runner died: run it again
        f"[-] echo alive >> out.txt [{HOST}:{os.getpid()}]\n"  # a live runner owns it: leave it
        f"[-] echo remote >> out.txt [otherhost:1]\n"  # another machine's: cannot tell, leave it
        "[ ] echo $CUDA_VISIBLE_DEVICES >> gpu.txt\n"
        "[ ] exit 3\n"
        "[x] echo old >> out.txt\n"
    )
    messages: list[str] = []
    failed = QueueRunner(jobs, gpu="1", say=messages.append).run()
    assert failed == 1
    assert (tmp_path / "out.txt").read_text() == "reclaimed\n" and (tmp_path / "gpu.txt").read_text() == "1\n"
    states = [(j.state, j.owner, j.exit_code) for j in parse_jobs_text(jobs.read_text())]
    assert states == [
        ("done", "", None),
        ("running", f"{HOST}:{os.getpid()}", None),
        ("running", "otherhost:1", None),
        ("done", "", None),
        ("failed", "", 3),
        ("done", "", None),
    ]
    assert any("reclaiming line 1" in m for m in messages)


def test_exit_75_puts_the_line_back_until_it_finishes(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    # First attempt "checkpoints" (exit 75), the second one finishes.
    jobs.write_text("[ ] if [ -e ckpt ]; then echo resumed >> out.txt; else touch ckpt; exit 75; fi\n")
    assert QueueRunner(jobs, say=lambda _: None).run() == 0
    assert (tmp_path / "out.txt").read_text() == "resumed\n"
    assert parse_jobs_text(jobs.read_text())[0].state == "done"


def test_queue_cli_errors(tmp_path: Path) -> None:
    bad = tmp_path / "jobs.txt"
    bad.write_text("python tools/train.py x.yaml\n")
    proc = subprocess.run([*QUEUE, str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "jobs.txt:1: expected a status box" in proc.stderr
    proc = subprocess.run([*QUEUE, str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_a_real_training_line(tmp_path: Path, repo_sudoku4: Path) -> None:
    data = repo_sudoku4
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        f"[ ] {sys.executable} {REPO / 'tools/train.py'} {REPO / 'trm/configs/quickstart.yaml'} "
        f"data_paths=[{data}] train.max_steps=5 arch.hidden_size=32 eval.max_batches=1 "
        f"log.progress=false run.root={tmp_path / 'runs'} run.name=q\n"
    )
    assert QueueRunner(jobs, say=lambda _: None).run() == 0
    assert json.loads((tmp_path / "runs" / "q" / "summary.json").read_text())["step"] == 5
    assert parse_jobs_text(jobs.read_text())[0].state == "done"
