"""The cluster layer: from a YAML sweep (or a jobs.txt) to jobs on SLURM, LSF or this machine.

spec.py       jobs/*.yaml -> Sweep[RunSpec] (strict; every run's config validated)
profile.py    env/*.yaml cluster profiles (scheduler, queues, modules, venv, scratch, limits)
jobs_file.py  the seeds' jobs.txt queue format
render.py     job scripts from templates/<scheduler>.sh.j2 (pure, every value shell-quoted)
backends/     submitit executors: slurm (our script), lsf (a submitit plugin), local
job.py        TrainJob(run_dir): what runs on the node; requeues on the trainer's exit code 75
submit.py     plan (never clobber), freeze configs, submit arrays, cancel
runstate.py   status.json of a run directory
scheduler.py  batched job states and cancel (sacct/squeue, bjobs, local pids)
status.py     the per-run table of tools/status.py
queue.py      the jobs.txt runner of tools/run_queue.py
collect/      results CSV and plots (tools/collect.py)
"""
