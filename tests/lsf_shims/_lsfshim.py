"""LSF's bsub/bjobs/bkill/brequeue for tests, backed by the local SLURM cluster (LSF emulation).

The job script handed to `bsub` on stdin runs for real: its #BSUB directives become sbatch options
(-J with arrays "name[1-N]%P", -q, -n, -W, -gpu num=N, -o/-e with %J/%I, -wa/-wt, -Q), and a
wrapper sets the LSB_* variables, forwards signals and requeues the job when it exits with a code
listed by -Q. The answers use LSF's formats: "Job <123> is submitted to queue <gpuv100>.",
`bjobs -o "jobid jobindex stat exit_code delimiter='|'" -noheader` rows with PEND/RUN/PSUSP/SSUSP/
DONE/EXIT, "Job <123> is not found", "Job <123> is being terminated"/"signaled"/"requeued".
Queues that exist: $TRM_LSF_SHIM_QUEUES (default "gpuv100 gpua100 hpc"); all run in the SLURM
cluster's default partition. Standard library only.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

QUEUES = os.environ.get("TRM_LSF_SHIM_QUEUES", "gpuv100 gpua100 hpc").split()
STATE_DIR = Path(os.environ.get("TRM_LSF_SHIM_DIR", Path(tempfile.gettempdir()) / "trm-lsf-shim"))
SLURM_TO_LSF = {
    "PENDING": "PEND",
    "REQUEUED": "PEND",
    "REQUEUE_HOLD": "PSUSP",
    "RUNNING": "RUN",
    "COMPLETING": "RUN",
    "SUSPENDED": "SSUSP",
    "COMPLETED": "DONE",
    "CONFIGURING": "PEND",
}
_REF = re.compile(r"^(\d+)(?:\[(\d+)\])?$")


def _slurm(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _ref(text: str) -> tuple[str, str | None]:
    m = _REF.match(text.strip().strip('"'))
    if not m:
        print(f"{text}: Illegal job ID.", file=sys.stderr)
        sys.exit(255)
    return m[1], m[2]


# ---------------------------------------------------------------------------------------------- bsub


def bsub(argv: list[str]) -> int:
    if argv or sys.stdin.isatty():
        print("bsub (test shim): give the job script on stdin: bsub < script.sh", file=sys.stderr)
        return 255
    script = sys.stdin.read()
    opts: dict[str, str] = {}
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#BSUB"):
            words = shlex.split(stripped[5:])
            i = 0
            while i < len(words):
                flag = words[i]
                if flag in ("-B", "-N", "-x"):
                    opts[flag] = ""
                    i += 1
                    continue
                if flag not in (
                    "-J",
                    "-q",
                    "-n",
                    "-R",
                    "-gpu",
                    "-W",
                    "-wa",
                    "-wt",
                    "-Q",
                    "-o",
                    "-e",
                    "-oo",
                    "-eo",
                    "-P",
                    "-M",
                    "-u",
                    "-cwd",
                ):
                    print(f"{flag}: Illegal option. Job not submitted.", file=sys.stderr)
                    return 255
                value = words[i + 1]
                opts[flag] = opts[flag] + " " + value if flag == "-R" and flag in opts else value
                i += 2
        elif stripped and not stripped.startswith("#"):
            break
    queue = opts.get("-q", QUEUES[0])
    if queue not in QUEUES:
        print(f"{queue}: No such queue. Job not submitted.", file=sys.stderr)
        return 255
    name, array = opts.get("-J", "NONAME"), ""
    if m := re.fullmatch(r"(.*)\[(\d+)-(\d+)\](?:%(\d+))?", name):
        name, array = m[1], f"{m[2]}-{m[3]}" + (f"%{m[4]}" if m[4] else "")
    tag = ("%A", "%a") if array else ("%j", "")

    def path(p: str) -> str:
        return p.replace("%J", tag[0]).replace("%I", tag[1])

    sbatch = [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        "--ntasks=1",
        f"--cpus-per-task={opts.get('-n', '1')}",
        "--open-mode=append",
        "--requeue",
        "--mem=500M",
    ]
    if array:
        sbatch.append(f"--array={array}")
    if "-W" in opts:
        h, _, mi = opts["-W"].rpartition(":")
        sbatch.append(f"--time={int(h or 0) * 60 + int(mi)}")
    if gpu := re.search(r"num=(\d+)", opts.get("-gpu", "")):
        sbatch.append(f"--gpus-per-node={gpu[1]}")
    if "-wa" in opts:
        sbatch.append(f"--signal=B:{opts['-wa']}@{int(opts.get('-wt', '1')) * 60}")
    for flag, slurm_flag in (("-o", "--output"), ("-oo", "--output"), ("-e", "--error"), ("-eo", "--error")):
        if flag in opts:
            sbatch.append(f"{slurm_flag}={path(opts[flag])}")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    saved = STATE_DIR / f"job_{uuid.uuid4().hex}.sh"
    saved.write_text(script)
    requeue_codes = " ".join(opts.get("-Q", "").replace('"', "").split())
    nslots = opts.get("-n", "1")
    wrapper = f"""#!/bin/bash
export LSB_JOBID=${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}
export LSB_JOBINDEX=${{SLURM_ARRAY_TASK_ID:-0}}
export LSB_JOBNAME={shlex.quote(opts.get("-J", name))}
export LSB_QUEUE={shlex.quote(queue)}
export LSB_DJOB_NUMPROC={nslots}
export LSB_HOSTS="$(for i in $(seq {nslots}); do printf '%s ' "$(hostname)"; done)"
export LSB_MCPU_HOSTS="$(hostname) {nslots}"
bash {shlex.quote(str(saved))} &
child=$!
for sig in USR1 USR2 TERM INT; do trap "kill -s $sig $child 2>/dev/null" $sig; done
while kill -0 $child 2>/dev/null; do wait $child; done
wait $child; rc=$?
for code in {requeue_codes}; do
  if [ "$rc" = "$code" ]; then
    ref=$SLURM_JOB_ID; [ -n "$SLURM_ARRAY_JOB_ID" ] && ref=${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}
    scontrol requeue "$ref"   # LSF -Q: back to PEND with the same job id
    exit "$rc"
  fi
done
exit "$rc"
"""
    proc = subprocess.run(sbatch, input=wrapper, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr.strip().replace("sbatch: error: ", "") + ". Job not submitted.", file=sys.stderr)
        return 255
    job_id = proc.stdout.strip().split(";")[0]
    print(f"Job <{job_id}> is submitted to queue <{queue}>.")
    return 0


# ---------------------------------------------------------------------------------------------- bjobs


def _rows(job_id: str) -> list[tuple[str, str, str, str]]:
    """(jobid, jobindex, stat, exit_code) for a job or all elements of an array."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    acct = _slurm("sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", job_id).stdout
    queue = _slurm("squeue", "-h", "-r", "-j", job_id, "-o", "%i|%T|%r").stdout  # alive: no accounting lag
    for line in acct.splitlines() + queue.splitlines():
        parts = line.split("|")
        if len(parts) != 3:
            continue
        jid, state, extra = parts
        state = state.split()[0]
        base, _, index = jid.partition("_")
        indices = [index] if index.isdigit() else []
        if m := re.fullmatch(r"\[(.*)\]", index):  # pending range "123_[2-5%2]"
            for part in m[1].split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                indices += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
        stat = SLURM_TO_LSF.get(state, "EXIT")
        if stat == "PEND" and "JobHeld" in extra:
            stat = "PSUSP"
        code = "-"
        if stat == "EXIT":
            code = extra.split(":")[0] if ":" in extra else "130"
            code = code if code != "0" else "130"  # killed: LSF reports a non-zero exit
        for i in indices or ["0"]:
            rows[i] = (base, i, stat, code)
    return [rows[k] for k in sorted(rows, key=int)]


def bjobs(argv: list[str]) -> int:
    fields, header, delim, ids = ["jobid", "stat"], True, " ", []
    i = 0
    while i < len(argv):
        if argv[i] == "-o":
            spec = argv[i + 1]
            if m := re.search(r"delimiter='([^']*)'", spec):
                delim = m[1]
                spec = spec.replace(m[0], "")
            fields = spec.split()
            i += 2
        elif argv[i] == "-noheader":
            header = False
            i += 1
        elif argv[i].startswith("-"):
            print(f"bjobs (test shim): option {argv[i]} is not emulated", file=sys.stderr)
            return 255
        else:
            ids.append(argv[i])
            i += 1
    known = ("jobid", "jobindex", "stat", "exit_code")
    for f in fields:
        if f not in known:
            print(f"{f}: Illegal field name.", file=sys.stderr)
            return 255
    out, missing = [], []
    for ref in ids:
        base, index = _ref(ref)
        rows = [r for r in _rows(base) if index is None or r[1] == index]
        if not rows:
            missing.append(ref)
        out += rows
    if header and out:
        print(delim.join(f.upper() for f in fields))
    for row in out:
        values = dict(zip(known, row))
        print(delim.join(values[f] for f in fields))
    for ref in missing:
        print(f"Job <{ref}> is not found", file=sys.stderr)
    return 255 if missing else 0


# ------------------------------------------------------------------------------------- bkill, brequeue


def _slurm_ref(ref: str) -> str:
    base, index = _ref(ref)
    return f"{base}_{index}" if index else base


def _alive(ref: str) -> bool:
    return bool(_slurm("squeue", "-h", "-j", _slurm_ref(ref), "-o", "%i").stdout.strip())


def bkill(argv: list[str]) -> int:
    sig = None
    if argv[:1] == ["-s"]:
        sig, argv = argv[1], argv[2:]
    rc = 0
    for ref in argv:
        if not _alive(ref):
            print(f"Job <{ref}>: No matching job found", file=sys.stderr)
            rc = 255
            continue
        if sig is None:
            _slurm("scancel", _slurm_ref(ref))
            print(f"Job <{ref}> is being terminated")
        else:  # LSF signals every process of the job: the batch shell and its children
            _slurm("scancel", "--batch", f"--signal={sig.removeprefix('SIG')}", _slurm_ref(ref))
            print(f"Job <{ref}> is being signaled")
    return rc


def brequeue(argv: list[str]) -> int:
    rc = 0
    for ref in argv:
        proc = _slurm("scontrol", "requeue", _slurm_ref(ref))
        if proc.returncode != 0:
            print(f"Job <{ref}>: No matching job found", file=sys.stderr)
            rc = 255
            continue
        print(f"Job <{ref}> is being requeued")
    return rc


if __name__ == "__main__":
    command = Path(sys.argv[1]).name
    sys.exit({"bsub": bsub, "bjobs": bjobs, "bkill": bkill, "brequeue": brequeue}[command](sys.argv[2:]))
