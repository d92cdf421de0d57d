"""Every tool answers bad input with a one-paragraph error, never a traceback: files that are not UTF-8,
malformed CSV rows, impossible sizes, fake archives, options naming the wrong kind of path; `--help` has
no side effects; messages name the files actually written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BAD = b"\xff\xfe not utf-8 \xc3\x28\n"


def tool(name: str, *args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_error(res: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------------
# files that are not UTF-8


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"arch:\n  hidden_size: 32\n# " + BAD)
    clean_error(tool("train", cfg), "c.yaml", "not UTF-8")


def test_a_spec_and_a_profile_that_are_not_utf8(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(b"name: s\n# " + BAD)
    clean_error(tool("submit", spec, "--dry-run", "--out", tmp_path / "o"), "s.yaml", "UTF-8")
    profile = tmp_path / "p.yaml"
    profile.write_bytes(b"scheduler: slurm\n# " + BAD)
    clean_error(
        tool("submit", ROOT / "jobs" / "quickstart.yaml", "--profile", profile, "--dry-run", "--out", tmp_path / "o"),
        "p.yaml",
        "UTF-8",
    )


def test_run_files_and_a_shared_results_file_that_are_not_utf8(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "sw" / "r1"
    run.mkdir(parents=True)
    for name in ("summary.json", "status.json", "metrics.jsonl", "config.yaml"):
        (run / name).write_bytes(BAD)
    res = tool("collect", tmp_path / "runs" / "sw", "--out", tmp_path / "results", "--no-plots")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    shared = tmp_path / "all.csv"
    shared.write_bytes(b"sweep,run_dir\n" + BAD)
    clean_error(
        tool("collect", tmp_path / "runs" / "sw", "--out", tmp_path / "results", "--no-plots", "--append", shared),
        "all.csv",
        "UTF-8",
    )
    assert shared.read_bytes() == b"sweep,run_dir\n" + BAD  # never rewritten


def test_a_csv_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_bytes(b"source,question,answer,rating\nx," + BAD)
    (tmp_path / "test.csv").write_bytes(b"source,question,answer,rating\n")
    clean_error(tool("build_data", "sudoku", "--input-csv", tmp_path, "--out", tmp_path / "out"), "train.csv", "UTF-8")
    clean_error(tool("build_data", "maze", "--input-csv", tmp_path, "--out", tmp_path / "out"), "train.csv", "UTF-8")


# ---------------------------------------------------------------------------------------------------
# malformed rows, impossible asks


MAZE_Q = "S #" + " " * 12 + "G"  # a 4x4 maze, row-major
MAZE_A = "So#" + "o" * 0 + " " * 12 + "G"


@pytest.mark.parametrize(
    "row,needle",
    [
        ("x,,,1", "question has 0 characters"),
        ('x,"S  #,G,1', "columns, expected 4"),
        (f"x,{MAZE_Q},{MAZE_A},not-a-number", "line 2"),
        (f"x,{MAZE_Q},{MAZE_A[:-1]},1", "line 2: answer has 15 characters"),
        (f"x,{MAZE_Q.replace('S', 'Q')},{MAZE_A},1", "line 2"),
    ],
)
def test_a_malformed_maze_row_names_file_and_line(tmp_path: Path, row: str, needle: str) -> None:
    (tmp_path / "train.csv").write_text(f"source,question,answer,rating\n{row}\n")
    (tmp_path / "test.csv").write_text(f"source,question,answer,rating\nx,{MAZE_Q},{MAZE_A},1\n")
    clean_error(tool("build_data", "maze", "--input-csv", tmp_path, "--out", tmp_path / "out"), "train.csv", needle)


def test_more_distinct_4x4_puzzles_than_exist_are_refused_up_front(tmp_path: Path) -> None:
    t0 = time.monotonic()
    res = tool("build_data", "sudoku4x4", "--num-train", "100000", "--out", tmp_path / "big")
    clean_error(res, "85,632 distinct minimal 4x4 puzzles exist")
    assert time.monotonic() - t0 < 120  # refused, not searched for (it ran 400 s and more before)
    assert not (tmp_path / "big").exists()


def test_the_number_of_minimal_4x4_puzzles_is_exact() -> None:
    """Recount what the builder's limit says: unique solution, and no given can be removed."""
    from trm.data.build_sudoku import NUM_MINIMAL_4X4
    from trm.data.sudoku import all_grids_4x4

    grids = all_grids_4x4()
    bits = 1 << np.arange(16, dtype=np.int64)
    agree = ((grids[:, None, :] == grids[None, :, :]) * bits).sum(-1)  # where two grids agree, as a bit mask
    masks = np.arange(1 << 16, dtype=np.int64)
    total = 0
    for i in np.flatnonzero((grids[:, :4] == [1, 2, 3, 4]).all(1)):  # one grid per relabelling class (x24)
        unique = np.ones(1 << 16, bool)
        for a in np.delete(agree[i], i):
            unique &= (masks & ~a) != 0
        minimal = unique.copy()
        for b in range(16):
            minimal &= ((masks >> b) & 1 == 0) | ~unique[masks ^ (1 << b)]
        total += int(minimal.sum()) * 24
    assert total == NUM_MINIMAL_4X4


# ---------------------------------------------------------------------------------------------------
# show, collect, check_data, quickstart


@pytest.fixture(scope="module")
def small4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("d") / "s4"
    res = tool("build_data", "sudoku4x4", "--out", out, "--num-train", "20", "--num-test", "8", "--num-aug", "1")
    assert res.returncode == 0, res.stderr
    return out


def test_show_refuses_a_negative_count_and_a_fake_npz(small4: Path, tmp_path: Path) -> None:
    clean_error(tool("show", small4, "--random", "-3", "--no-png"), "--random N: N must be at least 1")
    clean_error(tool("show", small4, "--num", "0", "--no-png"), "--num must be at least 1")
    fake = tmp_path / "preds.npz"
    fake.write_text("not an archive")
    clean_error(tool("show", fake), "preds.npz", "not an .npz file")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object))
    import zipfile

    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "inputs.npy")
    clean_error(tool("show", tmp_path / "pickled.npz"), "pickled.npz")


def test_show_names_the_png_it_wrote(small4: Path, tmp_path: Path) -> None:
    res = tool("show", small4, "--png", tmp_path / "X", "--no-text")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "X.png").is_file() and not (tmp_path / "X").exists()
    assert res.stdout.strip() == f"wrote {tmp_path / 'X.png'}"


def test_collect_out_naming_a_file(tmp_path: Path) -> None:
    (tmp_path / "runs" / "sw" / "r1").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    clean_error(tool("collect", tmp_path / "runs" / "sw", "--out", tmp_path / "file"), "--out", "is a file")
    clean_error(
        tool("collect", tmp_path / "runs" / "sw", "--out", tmp_path / "r", "--append", tmp_path),
        "--append",
        "is a folder",
    )
    assert (tmp_path / "file").read_text() == "x"


def test_check_data_help_and_unknown_options(small4: Path) -> None:
    res = tool("check_data", "--help")
    assert res.returncode == 0 and "Check dataset folders" in res.stdout and "problem" not in res.stdout.split("\n")[0]
    clean_error(tool("check_data", "--nope"), "unknown option --nope")
    assert tool("check_data", small4).returncode == 0


def _listing(*folders: Path) -> dict[str, list[str]]:
    return {str(f): sorted(p.name for p in f.iterdir()) if f.is_dir() else [] for f in folders}


def test_quickstart_help_builds_and_trains_nothing() -> None:
    before = _listing(ROOT / "data", ROOT / "runs", ROOT / "runs" / "quickstart")
    res = tool("quickstart", "--help", timeout=120)
    assert res.returncode == 0 and "Quick start" in res.stdout, res.stderr
    assert _listing(ROOT / "data", ROOT / "runs", ROOT / "runs" / "quickstart") == before


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "tools").glob("*.py")))
def test_every_tool_answers_help_without_side_effects(name: str, tmp_path: Path) -> None:
    before = _listing(ROOT, ROOT / "data", ROOT / "runs")
    res = tool(name, "--help", cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() and "Traceback" not in res.stderr, res.stderr
    assert _listing(ROOT, ROOT / "data", ROOT / "runs") == before and list(tmp_path.iterdir()) == []
