"""No secret goes through a cluster profile, and job scripts and logs are not world-readable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trm.hpc.profile import ProfileError, profile_from_dict
from trm.hpc.spec import load_sweep
from trm.hpc.submit import dry_run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "field,value,secret",
    [
        ("env", {"WB": "$WANDB_API_KEY"}, "WANDB_API_KEY"),
        ("env", {"WB": "prefix-${HF_TOKEN}-suffix"}, "HF_TOKEN"),
        ("scratch", "/work3/$WANDB_API_KEY/tmp", "WANDB_API_KEY"),
        ("runs_root", "/runs/${DB_PASSWORD}", "DB_PASSWORD"),
        ("setup", ["echo $GITHUB_TOKEN"], "GITHUB_TOKEN"),
        ("extra_directives", ["--comment=$MY_SECRET"], "MY_SECRET"),
        ("python", "/x/$AWS_SECRET_ACCESS_KEY/python", "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_a_profile_value_that_expands_a_secret_is_refused(field, value, secret, monkeypatch, tmp_path):
    monkeypatch.setenv(secret, "s3cr3t-value")
    with pytest.raises(ProfileError) as err:
        profile_from_dict({"scheduler": "slurm", field: value}, "profile p.yaml")
    message = str(err.value)
    assert f"${secret}" in message and field in message and "s3cr3t-value" not in message


def test_plain_variables_still_expand(monkeypatch):
    monkeypatch.setenv("USER", "s123456")
    prof = profile_from_dict({"scheduler": "slurm", "scratch": "/work3/$USER/tmp", "env": {"X": "${USER}"}}, "p")
    assert prof.scratch == "/work3/s123456/tmp" and prof.env_dict == {"X": "s123456"}


@pytest.mark.parametrize("group_access,file_mode", [(False, 0o600), (True, 0o640)])
def test_job_scripts_are_owner_only_or_group_as_the_profile_says(group_access, file_mode, tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "s123456")
    profile = tmp_path / "p.yaml"
    base = (REPO / "env" / "slurm-generic.yaml").read_text()
    profile.write_text(base + f"\ngroup_access: {str(group_access).lower()}\n")
    sweep = load_sweep(REPO / "jobs" / "quickstart.yaml", runs_root=tmp_path / "runs", profile=str(profile))
    written = dry_run(sweep, sweep.runs, tmp_path / "scripts")
    assert written
    for script in written:
        assert stat.S_IMODE(script.stat().st_mode) == file_mode, script


def test_the_logs_folder_is_closed_to_others(tmp_path):
    from trm.hpc.profile import LOCAL, Profile, protect_dir

    logs = protect_dir(tmp_path / "sweep" / "logs", LOCAL)
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    shared = Profile(name="g", scheduler="slurm", group_access=True)
    assert stat.S_IMODE(protect_dir(logs, shared).stat().st_mode) == 0o750
