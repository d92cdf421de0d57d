#!/bin/bash
# trm job script for LSF, rendered from templates/lsf.sh.j2 (edit the template, not this file).
# Submit with `bsub < script` (bsub reads #BSUB lines from stdin only).
# sweep: maze_ablations; runs: baseline, no_ema
#BSUB -J "maze_ablations[1-5]%5"
#BSUB -q gpuv100
#BSUB -n 16
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=4GB]"
#BSUB -gpu "num=2:mode=exclusive_process"
#BSUB -W 24:00
#BSUB -wa USR2
#BSUB -wt 5
#BSUB -Q 75
#BSUB -o /scratch/s123456/trm-runs/maze_ablations/logs/%J_%I_0_log.out
#BSUB -e /scratch/s123456/trm-runs/maze_ablations/logs/%J_%I_0_log.err

set -eo pipefail
# cluster modules (the venv's interpreter links into the Python module's tree)
module load python3/3.10.12
module load cuda/12.6
source /zhome/ab/s123456/trm-hpc/.venv/bin/activate
export PYTHONUNBUFFERED=1
export SUBMITIT_PREEMPT_SIGNAL=USR2
export TRM_SIGNAL_DELAY_S=300
export OMP_NUM_THREADS=8  # one thread per CPU of the task; more oversubscribes the cores
export TRM_SCRATCH=/work3/s123456/trm-tmp
mkdir -p "$TRM_SCRATCH"
export TMPDIR="$TRM_SCRATCH"
cd /zhome/ab/s123456/trm-hpc

set +e  # from here on the exit statuses of the ranks are collected, not fatal
export SUBMITIT_EXECUTOR=lsf
export TRM_LSF_NTASKS=2
export TRM_LSF_REQUEUE=exit_code
if [ "${LSB_JOBINDEX:-0}" != 0 ]; then TRM_LSF_INDEX_TAG="_${LSB_JOBINDEX}"; else TRM_LSF_INDEX_TAG=""; fi
# LSF starts this script once: start one process per rank here. Rank 0 writes to the job's -o/-e
# files, the others to their own submitit task logs.
pids=()
for ((t = 0; t < TRM_LSF_NTASKS; t++)); do
  if [ "$t" = 0 ]; then
    TRM_LSF_LOCAL_RANK=$t /zhome/ab/s123456/trm-hpc/.venv/bin/python -u -m submitit.core._submit /scratch/s123456/trm-runs/maze_ablations/logs &
  else
    TRM_LSF_LOCAL_RANK=$t /zhome/ab/s123456/trm-hpc/.venv/bin/python -u -m submitit.core._submit /scratch/s123456/trm-runs/maze_ablations/logs >>/scratch/s123456/trm-runs/maze_ablations/logs/"${LSB_JOBID}${TRM_LSF_INDEX_TAG}_${t}_log".out 2>>/scratch/s123456/trm-runs/maze_ablations/logs/"${LSB_JOBID}${TRM_LSF_INDEX_TAG}_${t}_log".err &
  fi
  pids+=($!)
done
# Forward the warning signal (requeue) and a kill's TERM (stop) to every rank; keep waiting while
# they checkpoint: `wait` returns early when a trapped signal arrives. bkill sends INT first (then
# TERM, then KILL): a stop too, forwarded as TERM so that the ranks checkpoint at once.
forward() { kill -s "$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward USR2' USR2
trap 'forward TERM' TERM
trap 'forward TERM' INT
rc=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
  wait "$pid"; code=$?  # bash keeps the status of a finished child for a second wait
  if [ "$rc" = 0 ] && [ "$code" != 0 ]; then rc=$code; fi
done
# Exit 75 (the trainer checkpointed and wants a requeue) makes LSF requeue the job (-Q).
exit "$rc"
