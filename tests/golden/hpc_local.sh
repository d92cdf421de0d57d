#!/bin/bash
# trm job script for the local machine (no scheduler), rendered from templates/local.sh.j2.
# submitit's local controller runs it once per task and restarts it after a requeue.
# sweep: maze_ablations; runs: baseline

set -eo pipefail
export PYTHONUNBUFFERED=1
export SUBMITIT_PREEMPT_SIGNAL=USR2
cd /zhome/ab/s123456/trm-hpc

export SUBMITIT_EXECUTOR=local
exec /zhome/ab/s123456/trm-hpc/.venv/bin/python -u -m submitit.core._submit /scratch/s123456/trm-runs/maze_ablations/logs
