"""What the cluster layer asks of a scheduler: one `Backend` subclass per scheduler, in submitit's shape.

    backend = backend_for("slurm")                     # trm.hpc.backends: the table name -> class
    executor = backend.executor(profile, folder, resources, repo_root, job_name="maze.baseline")
    states = backend.job_states(["4711", "4712_3"])    # {"4711": "RUNNING", "4712_3": "COMPLETED"}

A backend owns its submitit executor (built from a profile and the resources), its template
(`templates/<template>`) and the scheduler-specific values the template prints, its state query and
cancel, what a TERM on the node meant, and its names. Everything else in the cluster layer (spec,
render, submit, status, the job) asks the backend instead of testing the scheduler's name.
"""

from __future__ import annotations

import abc
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from trm.hpc.backends import submitit_private
from trm.hpc.profile import Profile
from trm.hpc.render import ScriptRequest, job_python
from trm.hpc.scheduler import SchedulerError
from trm.hpc.spec import Resources


class Backend(abc.ABC):
    name: ClassVar[str]  # a profile's `scheduler:` value, and SUBMITIT_EXECUTOR on the node
    display_name: ClassVar[str]  # for messages: "SLURM", "LSF"
    template: ClassVar[str]  # the job script's template in templates/
    script_suffix: ClassVar[str]  # file extension of the scripts `tools/submit.py --dry-run` writes
    job_id_env: ClassVar[str]  # the variable that holds the job id on the node
    array_index_env: ClassVar[str] = ""  # the variable that holds the array element's index ("" : no arrays)
    cancel_command: ClassVar[str] = ""  # the command that cancels jobs ("": signals to local processes)
    multi_node: ClassVar[bool] = False  # one job may span several hosts
    arrays: ClassVar[bool] = True  # several runs can go out as one array job
    foreground: ClassVar[bool] = False  # runs train here, one after the other, while tools/submit.py waits

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def executor(
        self,
        profile: Profile,
        folder: Path,
        resources: Resources,
        repo_root: Path,
        job_name: str,
        python: str | None = None,
    ) -> Any:
        """A submitit executor whose scripts come from this backend's template; `python` is shell
        text (default: the profile's interpreter, else its venv's, else this one)."""
        submitit_private.require()
        request = ScriptRequest(profile, resources, job_name, folder, "", repo_root)
        return self.new_executor(request, python or job_python(profile, repo_root))

    @abc.abstractmethod
    def new_executor(self, request: ScriptRequest, python: str) -> Any:
        """The executor for `request` (command left empty: submitit fills it in per submission)."""

    def script_context(self, req: ScriptRequest) -> dict[str, object]:
        """The values this backend's template prints beyond the ones every template gets."""
        return {}

    def template_filters(self) -> dict[str, Callable[[object], str]]:
        """Jinja filters this backend's template uses beyond `raw`."""
        return {}

    @abc.abstractmethod
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """submitit's state names for `job_ids` (sorted, unique, non-empty), in one call where the
        scheduler allows; a job the scheduler no longer knows is left out or PURGED/GONE."""

    @abc.abstractmethod
    def cancel(self, job_ids: list[str]) -> str:
        """Cancel the jobs (array elements too) in one call; returns the scheduler's output."""

    def stop_kind(self) -> str:
        """On the node, after the trainer stopped on a TERM: "cancelled", or "requeued" / "preempted" /
        "timeout" when the scheduler itself sent it (see trm.hpc.job). By default a cancel: LSF preempts
        by suspending (the job stays alive) and the local machine never preempts."""
        return "cancelled"

    def restart_count(self) -> int:
        """On the node: how often the scheduler has restarted this job under the same id."""
        return 0

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        """One scheduler command, its output captured; a missing command is a SchedulerError."""
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise SchedulerError(
                f"'{cmd[0]}' not found: is this a login node of the {self.display_name} cluster the profile names?"
            ) from None
