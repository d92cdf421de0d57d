"""Pytest fixtures of the cluster layer: a real local SLURM for the session, LSF shims on PATH.

Import them in a test module: `from hpc_fixtures import slurm_cluster, lsf_shims  # noqa: F401`.
The cluster starts once per session (however many modules import the fixture) and stops at its
end. Without the SLURM packages the tests are skipped with a message, except when the environment
variable CI is set: then they fail, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slurm_cluster import LocalSlurm, slurm_installed
from waits import limit

REPO = Path(__file__).resolve().parents[1]
SHIMS = Path(__file__).resolve().parent / "lsf_shims"
_shared: dict[str, object] = {"cluster": None, "users": 0}


def _unavailable(reason: str) -> None:
    message = f"local SLURM cluster unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this fails instead of skipping; run .ci/install-slurm.sh)")
    pytest.skip(message + " (install it with: sudo .ci/install-slurm.sh)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    if _shared["cluster"] is None:
        missing = slurm_installed()
        if missing:
            _unavailable(f"'{missing}' is not installed")
        if os.geteuid() != 0:
            _unavailable("the test cluster's daemons need root")
        _shared["cluster"] = LocalSlurm.start_new()
    cluster: LocalSlurm = _shared["cluster"]  # type: ignore[assignment]
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(cluster.conf))
    # Jobs inherit the submitting environment (sbatch --export=ALL): this checkout must win on the node.
    mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    mp.setenv("OMP_NUM_THREADS", "1")
    try:
        yield cluster
    finally:
        mp.undo()
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            cluster.stop()
            _shared["cluster"] = None


ENTRY_POINTS = """[submitit]
executor = trm.hpc.backends.lsf:LsfExecutor
job_environment = trm.hpc.backends.lsf:LsfJobEnvironment
"""


def _plugin_registered() -> bool:
    from importlib import metadata

    return any(ep.value == "trm.hpc.backends.lsf:LsfExecutor" for ep in metadata.entry_points(group="submitit"))


def _clear_submitit_plugin_cache() -> None:
    from submitit.core import plugins

    for fn in (plugins._get_plugins, plugins.get_executors, plugins.get_job_environments):
        fn.cache_clear()


@pytest.fixture()
def lsf_plugin(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `submitit` entry points of pyproject.toml, for a checkout whose installed metadata
    predates them: a dist-info on PYTHONPATH, which jobs inherit (same discovery path as pip's)."""
    if not _plugin_registered():
        site = tmp_path_factory.mktemp("plugin-site")
        info = site / "trm_lsf_plugin-0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trm-lsf-plugin\nVersion: 0.0\n")
        (info / "entry_points.txt").write_text(ENTRY_POINTS)
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    _clear_submitit_plugin_cache()
    yield
    _clear_submitit_plugin_cache()


@pytest.fixture()
def lsf_shims(slurm_cluster: LocalSlurm, lsf_plugin: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """bsub/bjobs/bkill/brequeue on PATH, backed by the local SLURM (tests/lsf_shims/)."""
    monkeypatch.setenv("PATH", f"{SHIMS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TRM_LSF_SHIM_PYTHON", sys.executable)
    monkeypatch.setenv("TRM_LSF_SHIM_DIR", str(tmp_path / "lsf-shim"))
    return SHIMS


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120, every: float = 0.5) -> object:
    """Poll `probe` until it returns something truthy; fail the test with `what` after `timeout` seconds
    times TRM_TEST_SLOWDOWN (tests/waits.py: a busy machine is slow, not wrong)."""
    end = time.monotonic() + limit(timeout)
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {limit(timeout):.0f} s waiting for {what}")


def has_checkpoint(run_dir: Path) -> bool:
    """The trainer has written at least one complete checkpoint (its COMPLETE marker)."""
    return any((run_dir / "checkpoints").glob("*/COMPLETE"))
