"""The trainer's two kinds of stop on real gloo ranks: TERM (a cancel) and USR2 (a preemption).

SIGTERM to one rank of a 2-rank run: the ranks agree at the next step, rank 0 saves, and both exit
143 (stopped, not "requeue me"); a TERM after a USR2 still means stop. `train.resume=auto` then
continues from that checkpoint to the end.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import TINY, launch_ranks, wait_all

from trm.rundir import EXIT_STOPPED
from trm.train import checkpoint as ckpt
from trm.train.preempt import StopWatch

CONFIG = "trm/configs/quickstart.yaml"


def test_term_after_usr2_still_means_stop() -> None:
    watch = StopWatch(["SIGUSR2", "SIGTERM"], 0, 0)
    try:
        watch._handler(signal.SIGUSR2, None)
        assert not watch.cancelled()
        watch._handler(signal.SIGTERM, None)
        watch._handler(signal.SIGUSR2, None)
        assert watch.cancelled() and watch.local_reason() == "signal SIGTERM"
    finally:
        watch.restore()


@pytest.mark.slow
def test_term_to_one_rank_stops_both_with_143_and_resume_finishes(sudoku4: Path, tmp_path: Path) -> None:
    args = [
        CONFIG,
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={tmp_path}",
        "+run_name=r",
        "log.log_interval=1",
        "train.max_steps=30",
        "train.epochs=40",
        "eval.eval_interval=20",
    ]
    procs = launch_ranks(args, 2)
    for line in procs[0].stdout:
        if line.startswith("train step       4/"):
            break
    procs[1].send_signal(signal.SIGTERM)
    results = wait_all(procs)
    assert [rc for rc, _ in results] == [EXIT_STOPPED, EXIT_STOPPED], results[0][1][-2000:]
    assert "exit code 143" in results[0][1]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    newest = ckpt.latest(tmp_path / "r" / "checkpoints", warn=False)
    assert summary["state"] == "cancelled" and newest is not None and int(newest.name.split("-")[1]) == summary["step"]
    for rc, text in wait_all(launch_ranks(args, 2)):
        assert rc == 0, text[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["state"], summary["step"], summary["total_steps"], summary["attempts"]) == ("done", 30, 30, 2)
