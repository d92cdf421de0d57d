"""jobs.txt under faults: a runner killed with SIGKILL mid-line neither loses nor repeats the line (also for
compound commands, whose processes outlive their shell), the parser keeps the command text whole, and a
rewrite keeps the file's mode and group."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from waits import wait_for

from trm.hpc.jobs_file import JobsFileError, parse_jobs_text, parse_line
from trm.hpc.queue import QueueRunner

REPO = Path(__file__).resolve().parents[1]
QUEUE = [sys.executable, str(REPO / "tools" / "run_queue.py")]

WORK = """
import pathlib, sys, time
out = pathlib.Path("out.txt")
with out.open("a") as f:
    f.write("start\\n")
while not pathlib.Path("go").exists():
    time.sleep(0.05)
with out.open("a") as f:
    f.write("end\\n")
"""


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("tail", ["; true", " | cat", " && echo ok >> ok.txt"])
def test_a_killed_runner_neither_loses_nor_repeats_its_line(tmp_path: Path, tail: str) -> None:
    (tmp_path / "work.py").write_text(WORK)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"[ ] {sys.executable} work.py{tail}\n")
    out = tmp_path / "out.txt"
    runner = subprocess.Popen([*QUEUE, str(jobs)], stdout=subprocess.DEVNULL)
    wait_for("the line to start", lambda: lines_of(out) == ["start"])
    wait_for("its process group in the line", lambda: "/" in parse_jobs_text(jobs.read_text())[0].owner)
    runner.send_signal(signal.SIGKILL)
    runner.wait()

    # A second runner while the line's processes still run: it must not start the line again.
    messages: list[str] = []
    assert QueueRunner(jobs, say=messages.append).run() == 0
    assert lines_of(out) == ["start"], messages
    assert parse_jobs_text(jobs.read_text())[0].state == "running"

    (tmp_path / "go").touch()
    wait_for("the orphaned line to finish", lambda: lines_of(out) == ["start", "end"])
    wait_for("its exit status", lambda: any((tmp_path / ".jobs.txt.lines").glob("*.exit")))
    pgid = int(parse_jobs_text(jobs.read_text())[0].owner.split("/")[1])
    wait_for("the line's processes to end", lambda: _group_gone(pgid))
    assert QueueRunner(jobs, say=messages.append).run() == 0
    job = parse_jobs_text(jobs.read_text())[0]
    assert job.state == "done" and job.command == f"{sys.executable} work.py{tail}", messages
    assert lines_of(out) == ["start", "end"]  # ran exactly once
    assert any("ended with exit 0" in m for m in messages)


def test_a_line_whose_processes_all_died_unrecorded_is_run_again(tmp_path: Path) -> None:
    (tmp_path / "work.py").write_text(WORK)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"[ ] {sys.executable} work.py; true\n")
    out = tmp_path / "out.txt"
    runner = subprocess.Popen([*QUEUE, str(jobs)], stdout=subprocess.DEVNULL)
    wait_for("the line to start", lambda: lines_of(out) == ["start"])
    wait_for("its process group in the line", lambda: "/" in parse_jobs_text(jobs.read_text())[0].owner)
    pgid = int(parse_jobs_text(jobs.read_text())[0].owner.split("/")[1])
    runner.send_signal(signal.SIGKILL)
    os.killpg(pgid, signal.SIGKILL)  # the node lost the whole line: nothing recorded its end
    runner.wait()
    wait_for("the line's processes to be gone", lambda: _group_gone(pgid))
    (tmp_path / "go").touch()
    messages: list[str] = []
    assert QueueRunner(jobs, say=messages.append).run() == 0
    assert lines_of(out) == ["start", "start", "end"] and parse_jobs_text(jobs.read_text())[0].state == "done"
    assert any("reclaiming line 1" in m for m in messages)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_term_to_the_runner_reaches_every_process_of_the_line(tmp_path: Path) -> None:
    # The trainer behind `...; true` gets the signal too (it checkpoints and exits 75 in real use).
    (tmp_path / "work.py").write_text(
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path('got_term').touch(), sys.exit(75)))\n"
        "pathlib.Path('started').touch()\n"
        "time.sleep(300)\n"
    )
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"[ ] {sys.executable} work.py; echo after >> out.txt\n")
    runner = subprocess.Popen([*QUEUE, str(jobs)], stdout=subprocess.DEVNULL)
    wait_for("the line to start", lambda: (tmp_path / "started").exists())
    wait_for("its process group in the line", lambda: "/" in parse_jobs_text(jobs.read_text())[0].owner)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=300) == 0
    assert (tmp_path / "got_term").exists()


@pytest.mark.parametrize(
    "text,command",
    [
        ("[ ] echo hi [foo:12]", "echo hi [foo:12]"),
        ("[ ] echo hi [exit 3]", "echo hi [exit 3]"),
        ("[x] echo hi [foo:12]", "echo hi [foo:12]"),
        ("[x] echo hi [exit 3]", "echo hi [exit 3]"),
        ("[-] echo hi [foo:12] [vm:1/7]", "echo hi [foo:12]"),
        ("[!] echo hi [exit 3] [exit 1]", "echo hi [exit 3]"),
    ],
)
def test_the_parser_keeps_the_command_text_whole(text: str, command: str) -> None:
    job = parse_line(text, 1)
    assert job is not None and job.command == command
    assert parse_line(job.format(), 1) == job


def test_a_command_ending_like_a_status_suffix_runs_and_stays_whole(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("[ ] echo [a:12] >> out.txt\n[ ] echo [exit 3] >> out.txt\n")
    assert QueueRunner(jobs, say=lambda _: None).run() == 0
    assert (tmp_path / "out.txt").read_text() == "[a:12]\n[exit 3]\n"
    assert jobs.read_text() == "[x] echo [a:12] >> out.txt\n[x] echo [exit 3] >> out.txt\n"


def test_rewriting_keeps_the_files_mode_and_group(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("[ ] true\n")
    os.chmod(jobs, 0o664)
    groups = [g for g in os.getgroups() if g != os.stat(jobs).st_gid] or ([100] if os.geteuid() == 0 else [])
    if groups:
        os.chown(jobs, -1, groups[0])
    before = os.stat(jobs)
    assert QueueRunner(jobs, say=lambda _: None).run() == 0
    after = os.stat(jobs)
    assert parse_jobs_text(jobs.read_text())[0].state == "done"
    assert stat.S_IMODE(after.st_mode) == 0o664 and after.st_gid == before.st_gid


def test_a_jobs_file_that_is_not_utf8_gets_a_one_line_error(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_bytes(b"[ ] echo \xff\xfe\n")
    with pytest.raises(JobsFileError, match="not UTF-8"):
        QueueRunner(jobs, say=lambda _: None).run()
    proc = subprocess.run([*QUEUE, str(jobs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
