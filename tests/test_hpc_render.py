"""Job-script rendering: golden files per scheduler, shell quoting, refusals.

Regenerate the golden files after an intended template change with
`TRM_UPDATE_GOLDEN=1 pytest tests/test_hpc_render.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from trm.hpc.backends.lsf import lsf_quote
from trm.hpc.profile import LOCAL, load_profile
from trm.hpc.render import RenderError, ScriptRequest, render_script, submitit_command
from trm.hpc.spec import Resources

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
FOLDER = Path("/scratch/s123456/trm-runs/maze_ablations/logs")
CHECKOUT = Path("/zhome/ab/s123456/trm-hpc")
RES = Resources(nodes=1, gpus_per_node=2, cpus_per_task=8, mem_gb=64, time="24:00:00")


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "s123456")  # the DTU profile's scratch paths use $USER


def request(profile_ref: str, array_size: int = 0, **kw: object) -> ScriptRequest:
    profile = load_profile(profile_ref, REPO)
    python = shlex.quote(str(CHECKOUT / ".venv/bin/python"))
    fields = dict(
        profile=profile,
        resources=RES,
        job_name="maze_ablations",
        folder=FOLDER,
        command=submitit_command(python, FOLDER),
        repo_root=CHECKOUT,
        array_size=array_size,
        runs=("baseline", "no_ema"),
        sweep="maze_ablations",
    )
    fields.update(kw)
    return ScriptRequest(**fields)  # type: ignore[arg-type]


CASES = {
    "slurm_array.sh": lambda: request("env/slurm-generic.yaml", array_size=5),
    "slurm_single.sh": lambda: request(
        "env/slurm-generic.yaml", job_name="maze_ablations.baseline", runs=("baseline",)
    ),
    "lsf_array.sh": lambda: request("env/dtu-lsf.yaml", array_size=5),
    "lsf_single.sh": lambda: request("env/dtu-lsf.yaml", job_name="maze_ablations.no_ema", runs=("no_ema",)),
    "local.sh": lambda: request("env/local.yaml", runs=("baseline",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_scripts_match_golden_files(name: str) -> None:
    text = render_script(CASES[name]())
    path = GOLDEN / f"hpc_{name}"
    if os.environ.get("TRM_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; rerun with TRM_UPDATE_GOLDEN=1 if intended"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # valid shell


def test_directives_of_each_scheduler() -> None:
    slurm = render_script(request("env/slurm-generic.yaml", array_size=7, array_parallelism=3))
    for line in [
        "#SBATCH --array=0-6%3",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=1440",
        "#SBATCH --mem=64G",
        "#SBATCH --output=/scratch/s123456/trm-runs/maze_ablations/logs/%A_%a_0_log.out",
        "export SUBMITIT_EXECUTOR=slurm",
        "srun --unbuffered --output ",
    ]:
        assert line in slurm, line
    lsf = render_script(request("env/dtu-lsf.yaml"))
    for line in [
        "#BSUB -J maze_ablations",
        '#BSUB -gpu "num=2:mode=exclusive_process"',
        "#BSUB -n 16",
        '#BSUB -R "span[hosts=1]"',
        '#BSUB -R "rusage[mem=4GB]"',
        "#BSUB -W 24:00",
        "#BSUB -wa USR2",
        "#BSUB -wt 5",
        "#BSUB -Q 75",
        "#BSUB -q gpuv100",
        "module load python3/3.10.12",
        "#BSUB -o /scratch/s123456/trm-runs/maze_ablations/logs/%J_0_log.out",
        "export SUBMITIT_EXECUTOR=lsf",
        "export TRM_LSF_NTASKS=2",
    ]:
        assert line in lsf, line
    assert "%I" not in lsf and "[1-" not in lsf


def test_profile_variants_change_directives(tmp_path: Path) -> None:
    gres = dataclasses.replace(
        load_profile("env/slurm-generic.yaml", REPO),
        gpu_directive="gres",
        account="proj-42",
        extra_directives=("--qos=high",),
    )
    text = render_script(
        dataclasses.replace(
            request("env/slurm-generic.yaml"),
            profile=gres,
            resources=dataclasses.replace(RES, mem_gb=1.5, queue="a100"),
        )
    )
    assert "#SBATCH --gres=gpu:2" in text and "--gpus-per-node" not in text
    assert "#SBATCH --account=proj-42" in text and "#SBATCH --qos=high" in text
    assert "#SBATCH --mem=1536M" in text and "#SBATCH --partition=a100" in text
    per_job = dataclasses.replace(load_profile("env/dtu-lsf.yaml", REPO), mem_per_slot=False, lsf_requeue="brequeue")
    lsf = render_script(dataclasses.replace(request("env/dtu-lsf.yaml"), profile=per_job))
    assert '#BSUB -R "rusage[mem=64GB]"' in lsf and "#BSUB -Q" not in lsf
    assert "export TRM_LSF_REQUEUE=brequeue" in lsf
    no_gpu = render_script(
        dataclasses.replace(request("env/dtu-lsf.yaml"), resources=dataclasses.replace(RES, gpus_per_node=0))
    )
    assert "-gpu" not in no_gpu and "export TRM_LSF_NTASKS=1" in no_gpu


NASTY = "a b;c'd\"e$(touch PWNED)`x`&|<>"


def test_values_are_quoted_for_real(tmp_path: Path) -> None:
    """A checkout path and env values full of shell metacharacters arrive unchanged; nothing runs."""
    weird = tmp_path / NASTY
    weird.mkdir()
    prof = dataclasses.replace(LOCAL, env=(("TRM_NASTY", NASTY),))
    probe = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import os; print(os.getcwd()); print(os.environ['TRM_NASTY'])"
    )
    text = render_script(ScriptRequest(prof, RES, "x", weird / "logs", probe, weird))
    out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.splitlines() == [str(weird), NASTY]
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_refusals() -> None:
    with pytest.raises(RenderError, match="line break"):
        render_script(request("env/slurm-generic.yaml", job_name="a\nb"))
    with pytest.raises(RenderError, match="#BSUB"):
        lsf_quote('gpu"v100')
    with pytest.raises(RenderError, match="one line"):
        render_script(
            dataclasses.replace(
                request("env/local.yaml"), profile=dataclasses.replace(LOCAL, setup=("echo a\necho b",))
            )
        )
    assert lsf_quote("gpuv100") == "gpuv100" and lsf_quote("a[1-3]%2") == '"a[1-3]%2"'
