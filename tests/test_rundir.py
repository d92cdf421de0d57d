"""trm/rundir.py: the run directory's names, atomic writers, readers and status record."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trm.config import Config, ConfigError, frozen_config_diff, load_config, to_yaml
from trm.rundir import (
    RunPaths,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    read_json,
    read_status,
    resolve_runs_root,
    update_status,
    utc_now,
    write_status,
)

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_writer_killed_between_write_and_rename_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text('{"step": 1}')
    # The child writes the new content in full and fsyncs it, then dies at the rename (os._exit: no
    # cleanup, as a SIGKILL or a lost node would leave it).
    res = _python(
        f"""
        import os
        import trm.rundir as r
        os.replace = lambda src, dst: os._exit(9)
        r.atomic_write_text({str(target)!r}, '{{"step": 2, "final": {{}}}}')
        """,
        tmp_path,
    )
    assert res.returncode == 9, res.stderr
    assert json.loads(target.read_text()) == {"step": 1}
    # What is left besides the file is a hidden temp name no reader opens.
    others = [n for n in _leftovers(tmp_path) if n != "summary.json"]
    assert len(others) == 1 and re.fullmatch(r"\.summary\.json\..+\.tmp", others[0]), others
    assert read_json(target) == {"step": 1}


def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    target.write_text('{"state": "running"}\n')

    def half_then_fail(f) -> None:  # noqa: ANN001
        f.write(b'{"state": "do')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write_with(target, half_then_fail)
    assert target.read_text() == '{"state": "running"}\n'
    assert _leftovers(tmp_path) == ["status.json"]


def test_atomic_writers_make_folders_and_modes(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "b" / "config.yaml", "x: 1\n")
    assert (tmp_path / "a" / "b" / "config.yaml").read_text() == "x: 1\n"
    atomic_write_bytes(tmp_path / "plot.png", b"\x89PNG")
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    mask = os.umask(0)
    os.umask(mask)
    # As open() would make it, not mkstemp's 0600: results and datasets are shared on a cluster.
    assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == 0o666 & ~mask
    atomic_write_text(tmp_path / "job.sh", "#!/bin/bash\n", mode=0o600)
    assert stat.S_IMODE((tmp_path / "job.sh").stat().st_mode) == 0o600
    shared = tmp_path / "jobs.txt"
    shared.write_text("[ ] a\n")
    os.chmod(shared, 0o664)
    atomic_write_text(shared, "[x] a\n", keep_mode=True)
    assert shared.read_text() == "[x] a\n" and stat.S_IMODE(shared.stat().st_mode) == 0o664
    atomic_write_json(tmp_path / "s.json", {"a": 1})
    assert (tmp_path / "s.json").read_text() == '{\n  "a": 1\n}\n'
    atomic_write_json(tmp_path / "t.json", {"a": 1}, trailing_newline=False)
    assert (tmp_path / "t.json").read_text() == '{\n  "a": 1\n}'


@pytest.mark.parametrize(
    "content",
    [None, b"", b'{"state": "runn', b"[1, 2]", b'"text"', b"\xff\xfe not utf-8", b"NaN garbage"],
    ids=["missing", "empty", "torn", "list", "string", "not-utf8", "garbage"],
)
def test_read_json_is_empty_for_anything_but_an_object(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "summary.json"
    if content is not None:
        path.write_bytes(content)
    assert read_json(path) == {}


def test_read_json_of_a_folder_is_empty(tmp_path: Path) -> None:
    assert read_json(tmp_path) == {}


def test_update_status_counts_lists_and_refuses_unknown_states(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "s" / "r"
    update_status(run, state="pending", scheduler="slurm")
    update_status(run, state="running", count="attempts", add_job_id="4711", add_log_path="/l/4711.out")
    status = update_status(run, count="attempts", add_job_id="4711", add_log_path="/l/4711.out")
    assert status["attempts"] == 2 and status["job_ids"] == ["4711"] and status["log_paths"] == ["/l/4711.out"]
    assert status["preemptions"] == 0 and status["scheduler"] == "slurm"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["updated_at"])
    assert read_status(run) == status
    with pytest.raises(ValueError, match=r"unknown run state 'finished'; expected one of"):
        update_status(run, state="finished")
    assert read_status(run)["state"] == "running"
    write_status(run, {"state": "pending"})
    assert read_status(run) == {"state": "pending"}


def test_status_updates_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    run = tmp_path / "r"
    code = f"""
        from trm.rundir import update_status
        for i in range(25):
            update_status({str(run)!r}, count="attempts")
        """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()  # type: ignore[union-attr]
    assert read_status(run)["attempts"] == 50


def test_paths_and_runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = RunPaths(tmp_path / "r")
    assert paths.summary.name == "summary.json" and paths.checkpoints.name == "checkpoints"
    assert not paths.exists() and not paths.has_results()
    (tmp_path / "r").mkdir()
    paths.config.write_text("{}")
    assert paths.exists() and not paths.has_results()  # submitted, not trained
    paths.metrics.write_text("")
    assert paths.has_results()
    monkeypatch.chdir(tmp_path)
    assert resolve_runs_root(None) == tmp_path / "runs"
    assert resolve_runs_root(None, "/scratch/me/runs") == Path("/scratch/me/runs")
    assert resolve_runs_root("elsewhere", "/scratch/me/runs") == tmp_path / "elsewhere"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())


def test_frozen_config_check(tmp_path: Path) -> None:
    cfg = load_config(REPO / "trm" / "configs" / "quickstart.yaml")
    frozen = tmp_path / "config.yaml"
    assert frozen_config_diff(frozen, cfg) == []  # nothing frozen yet
    frozen.write_text(to_yaml(cfg))
    assert frozen_config_diff(frozen, cfg) == []
    changed = load_config(REPO / "trm" / "configs" / "quickstart.yaml", ["arch.L_layers=3", "train.device=cpu"])
    assert frozen_config_diff(frozen, changed) == [f"arch.L_layers: {cfg.arch.L_layers!r} -> 3"]  # runtime keys free
    frozen.write_text("arch: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(f"{frozen}: cannot be read back")):
        frozen_config_diff(frozen, Config())
    frozen.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot be read back"):
        frozen_config_diff(frozen, Config())


def _loaded_modules(imports: str) -> set[str]:
    res = _python(f"import sys\n{imports}\nprint(' '.join(sorted(sys.modules)))", REPO)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


def test_rundir_stands_on_the_ground_floor() -> None:
    loaded = _loaded_modules("import trm.rundir")
    assert {m for m in loaded if m.startswith("trm")} == {"trm", "trm.rundir"}
    assert not loaded & {"yaml", "numpy", "torch"}


def test_cluster_layer_and_data_do_not_reach_across_for_small_facts() -> None:
    # The cluster layer writes run files through trm.rundir, not trm.data's dataset writer; the data
    # pipeline takes its label convention from the data format, not from the model.
    hpc = _loaded_modules("import trm.hpc.submit, trm.hpc.status, trm.hpc.queue, trm.hpc.collect, trm.hpc.job")
    assert not {m for m in hpc if m.startswith(("trm.data", "trm.model", "trm.train"))}
    data = _loaded_modules("import trm.data.iterator, trm.data.fewshot")
    assert not {m for m in data if m.startswith("trm.model")}
