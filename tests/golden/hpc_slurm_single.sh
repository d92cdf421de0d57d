#!/bin/bash
# trm job script for SLURM, rendered from templates/slurm.sh.j2 (edit the template, not this file).
# sweep: maze_ablations; runs: baseline
#SBATCH --job-name=maze_ablations.baseline
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-node=2
#SBATCH --mem=64G
#SBATCH --time=1440
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=/scratch/s123456/trm-runs/maze_ablations/logs/%j_0_log.out
#SBATCH --error=/scratch/s123456/trm-runs/maze_ablations/logs/%j_0_log.err

set -eo pipefail
source /zhome/ab/s123456/trm-hpc/.venv/bin/activate
export PYTHONUNBUFFERED=1
export SUBMITIT_PREEMPT_SIGNAL=USR2
export OMP_NUM_THREADS=4
cd /zhome/ab/s123456/trm-hpc

# one task per rank; the warning signal goes to the tasks (no "B:"), where submitit/the trainer catch it
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /scratch/s123456/trm-runs/maze_ablations/logs/%j_%t_log.out --error /scratch/s123456/trm-runs/maze_ablations/logs/%j_%t_log.err /zhome/ab/s123456/trm-hpc/.venv/bin/python -u -m submitit.core._submit /scratch/s123456/trm-runs/maze_ablations/logs
