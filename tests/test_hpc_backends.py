"""The scheduler backends: one class per scheduler in one table, the LSF executor's parameter checks,
and the one module that knows submitit's private names."""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import submitit
from submitit.core import core, job_environment
from submitit.core.utils import DelayedSubmission

from trm.hpc.backends import BACKENDS, UnknownSchedulerError, backend_for, submitit_private
from trm.hpc.backends.base import Backend
from trm.hpc.backends.lsf import LsfExecutor, LsfInfoWatcher, LsfJob
from trm.hpc.profile import load_profile
from trm.hpc.render import TEMPLATE_DIR, ScriptRequest
from trm.hpc.spec import SpecError, load_sweep
from trm.hpc.status import sweep_rows
from trm.hpc.submit import cancel_sweep, dry_run, submit_sweep
from trm.rundir import read_status

REPO = Path(__file__).resolve().parents[1]


def test_every_registered_backend_has_its_names_and_template() -> None:
    for name in BACKENDS:
        backend = backend_for(name)
        assert isinstance(backend, Backend) and backend.name == name
        assert (TEMPLATE_DIR / backend.template).is_file()
        assert backend.display_name and backend.script_suffix and backend.job_id_env
    with pytest.raises(UnknownSchedulerError, match="unknown scheduler 'pbs'; the backends are: slurm, lsf, local"):
        backend_for("pbs")


# ---------------------------------------------------------------------------------------------- a new scheduler


class ToyBackend(Backend):
    """A scheduler added as docs/architecture.md says: this class, one line in BACKENDS, a template
    (here the local one). Jobs go to submitit's debug executor; states and cancels are remembered."""

    name = "toy"
    display_name = "Toy"
    template = "local.sh.j2"
    script_suffix = "toy"
    job_id_env = "TOY_JOB_ID"
    arrays = False

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.cancelled: list[str] = []

    def new_executor(self, request: ScriptRequest, python: str) -> Any:
        return submitit.DebugExecutor(request.folder)

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        return {j: self.states.get(j, "GONE") for j in job_ids}

    def cancel(self, job_ids: list[str]) -> str:
        self.cancelled += job_ids
        return f"toy cancelled {' '.join(job_ids)}"


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ToyBackend]:
    monkeypatch.setitem(BACKENDS, "toy", f"{__name__}:ToyBackend")
    backend_for.cache_clear()
    yield backend_for("toy")  # type: ignore[misc]
    backend_for.cache_clear()


def _toy_sweep(tmp_path: Path, nodes: int = 1) -> Path:
    (tmp_path / "toy.yaml").write_text("scheduler: toy\nvenv: ''\n")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"name: toys\nconfig: {REPO / 'trm/configs/quickstart.yaml'}\nprofile: {tmp_path / 'toy.yaml'}\n"
        f"resources: {{nodes: {nodes}, cpus_per_task: 1, time: 10}}\nruns: [a, b]\n"
    )
    return spec


def test_a_new_scheduler_is_one_class_one_table_entry_one_template(toy: ToyBackend, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nodes=2, but the toy backend runs single-node jobs only"):
        load_sweep(_toy_sweep(tmp_path, nodes=2), runs_root=tmp_path / "runs")
    sweep = load_sweep(_toy_sweep(tmp_path), runs_root=tmp_path / "runs")
    assert sweep.profile.scheduler == "toy"

    scripts = dry_run(sweep, sweep.runs, tmp_path / "dry")  # no arrays: one script per run, its suffix
    assert [p.name for p in scripts] == ["a.toy", "b.toy"]
    assert "rendered from templates/local.sh.j2" in scripts[0].read_text()

    result = submit_sweep(sweep, data_check=False, say=lambda _: None)
    assert sorted(result.submitted) == ["a", "b"]
    job_a = result.submitted["a"]
    assert read_status(sweep.run("a").run_dir)["scheduler"] == "toy"

    toy.states = {job_a: "RUNNING"}  # b's job is unknown to the toy scheduler: it ended unannounced
    rows = {r.run: r for r in sweep_rows(sweep)}
    assert rows["a"].state == "pending" and rows["b"].state == "failed" and "ended as GONE" in rows["b"].message

    assert cancel_sweep(sweep, say=lambda _: None) == ["a", "b"]  # both still say pending
    assert toy.cancelled == sorted(result.submitted.values())
    assert read_status(sweep.run("a").run_dir)["state"] == "cancelled"


# ---------------------------------------------------------------------------------------------- LSF parameters


@pytest.fixture()
def fake_bsub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `bsub` on PATH that keeps the script it reads and answers as LSF does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bsub = bin_dir / "bsub"
    bsub.write_text(f'#!/bin/sh\ncat > {tmp_path}/bsub-stdin.sh\necho "Job <4242> is submitted to queue <gpuv100>."\n')
    bsub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("USER", "s123456")  # the DTU profile's scratch path uses $USER
    monkeypatch.setattr(LsfJob, "watcher", LsfInfoWatcher())  # the job registers here, not in the shared one
    return tmp_path / "bsub-stdin.sh"


def test_lsf_parameters_are_checked_without_rendering_and_the_script_is_rendered_at_submit(
    fake_bsub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[str] = []
    render = jinja2.Template.render
    monkeypatch.setattr(
        jinja2.Template, "render", lambda self, *a, **kw: renders.append(self.name) or render(self, *a, **kw)
    )
    ex = LsfExecutor(tmp_path / "logs", profile=load_profile("env/dtu-lsf.yaml", REPO), repo_root=REPO)
    for i in range(20):
        ex.update_parameters(job_name=f"maze.run{i}", time=60 + i, mem_gb=8, gpus_per_node=1, queue="gpua100")
    assert renders == []

    refused = [
        ({"mem_gb": 0}, "mem_gb must be a positive number of GB, got 0"),
        ({"mem_gb": float("nan")}, "mem_gb must be a positive number of GB"),
        ({"time": 0}, "time must be a number >= 1, got 0"),
        ({"time": "1h"}, "time must be a number >= 1, got '1h'"),
        ({"cpus_per_task": 0}, "cpus_per_task must be a number >= 1"),
        ({"gpus_per_node": -1}, "gpus_per_node must be a number >= 0"),
        ({"job_name": 'maze "quoted"'}, "into a #BSUB directive"),
        ({"queue": "gpu$x"}, "into a #BSUB directive"),
        ({"nodes": 2}, "single-host jobs only"),
        ({"partition": "x"}, r"Unavailable parameter\(s\) \['partition'\]"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError, match=message):
            ex.update_parameters(**{"mem_gb": 16, **kwargs})
        assert ex.parameters["mem_gb"] == 8  # a refused call changes nothing
    assert renders == []

    job = ex.submit(operator.add, 2, 3)
    assert job.job_id == "4242" and renders == ["lsf.sh.j2"]
    script = fake_bsub.read_text()
    assert script == job.paths.submission_file.read_text()
    assert "#BSUB -J maze.run19\n" in script and "#BSUB -W 1:19\n" in script and "#BSUB -q gpua100\n" in script


# ---------------------------------------------------------------------------------------- submitit's private names


def test_submitit_private_names_are_where_trm_reads_them() -> None:
    found = submitit_private.problems()
    assert not found, (
        f"submitit {submitit_private.installed_version()} is installed; trm/hpc/backends/submitit_private.py "
        f"was read from {submitit_private.SUBMITIT_VERSION_READ}. Moved:\n" + "\n".join(found)
    )


def test_a_moved_private_name_fails_loudly_naming_it_and_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(job_environment.JobEnvironment, "_requeue")
    monkeypatch.setattr(core.PicklingExecutor, "_submit_command", lambda self, command, retries: None)
    init = DelayedSubmission.__init__

    def without_countdown(self: DelayedSubmission, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        del self._timeout_countdown

    monkeypatch.setattr(DelayedSubmission, "__init__", without_countdown)
    found = "\n".join(submitit_private.problems())
    assert "submitit.core.job_environment:JobEnvironment._requeue is gone" in found
    assert "PicklingExecutor._submit_command now takes (self, command, retries), not (self, command)" in found
    assert "DelayedSubmission instances no longer have _timeout_countdown" in found
    submitit_private.require.cache_clear()
    try:
        installed, read = submitit_private.installed_version(), submitit_private.SUBMITIT_VERSION_READ
        message = f"submitit {re.escape(installed)} is installed, but .* written against submitit {re.escape(read)}"
        with pytest.raises(RuntimeError, match=message):
            backend_for("local").executor(load_profile("local"), Path("/tmp"), None, REPO, "x")  # type: ignore[arg-type]
    finally:
        submitit_private.require.cache_clear()
