"""One scheduler call for many runs: the array path shared by the SLURM and LSF executors.

submitit's own array code renders with its stock script; ours keeps our template. The executor's
`map_count` parameter tells the template to emit the array directive while the call is made.
"""

from __future__ import annotations

import typing as tp
import uuid
from collections.abc import Callable

from submitit.core import core, utils

from trm.hpc.backends import submitit_private


def submit_array(
    executor: tp.Any,
    delayed: list[utils.DelayedSubmission],
    make_job: Callable[[core.Job[tp.Any], int], core.Job[tp.Any]],
) -> list[core.Job[tp.Any]]:
    """Pickle every submission, submit one array job, and hand element i its pickle.

    `make_job(array_job, i)` builds the submitit job of element i (0-based) from the submitted array job."""
    folder = utils.JobPaths.get_first_id_independent_folder(executor.folder)
    folder.mkdir(parents=True, exist_ok=True)
    pickles = []
    for d in delayed:
        path = folder / f"{uuid.uuid4().hex}.pkl"
        d.set_timeout(executor.parameters["time"], executor.max_num_timeout)
        d.dump(path)
        pickles.append(path)
    executor.parameters["map_count"] = len(delayed)
    try:
        first = submitit_private.submit_now(executor)
    finally:
        executor.parameters.pop("map_count")
    jobs = [make_job(first, i) for i in range(len(delayed))]
    for job, path in zip(jobs, pickles):
        job.paths.move_temporary_file(path, "submitted_pickle")
    return jobs
