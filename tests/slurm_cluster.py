"""A real single-node SLURM cluster as plain processes, for tests and benchmarks.

    cluster = LocalSlurm.start_new()          # munged, mariadbd, slurmdbd, slurmctld, slurmd
    os.environ.update(cluster.env)            # SLURM_CONF: sbatch/squeue/sacct find this cluster
    ...
    cluster.stop()                            # cancels jobs, stops the daemons, deletes the folder

Needs the Debian packages of `.ci/install-slurm.sh` and root (the daemons run as root, munge and
mysql). Everything lives in a fresh folder under /tmp with its own munge key and socket and free TCP
ports, so it never touches /etc/slurm, a system munged, or another test session's cluster. Settings
follow shared/reference/local-slurm.md: linuxproc tracking (no cgroups), fake GPU devices, a short
cred_expire so that a requeued job starts again after seconds, not minutes. A second partition,
`urgent`, preempts jobs of `debug` with PreemptMode=REQUEUE (SLURM's own preemption).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
PARTITION = "debug"
# A job here preempts jobs of PARTITION the way a busy site does (PreemptMode=REQUEUE, no
# GraceTime): the controller sends SIGCONT + SIGTERM, SIGKILL after KillWait, and requeues the job.
URGENT_PARTITION = "urgent"


def slurm_installed() -> str | None:
    """None when every program is there, else the first missing one."""
    for exe in (*DAEMONS, "mariadb-install-db", "mungekey", "sbatch", "sacct", "srun", "scontrol"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            return exe
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class LocalSlurm:
    root: Path
    ncpus: int = 8
    mem_mb: int = 20000
    ngpus: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @classmethod
    def start_new(cls, **kw: int) -> LocalSlurm:
        root = Path(tempfile.mkdtemp(prefix="trm-slurm-"))
        root.chmod(0o755)  # munge and mysql must reach their folders inside
        cluster = cls(root, **kw)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # ------------------------------------------------------------------------------------------

    def _run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, env=env)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 (lives as long as the daemon)
        self.procs[name] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    def _wait(self, what: str, probe, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.root / "log" / f"{name}.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{log}")
            try:
                if probe():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.root / 'log'}")

    def start(self) -> None:
        for sub in ("etc", "log", "run", "state/ctld", "state/d", "munge", "mysql", "fakegpu"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ports = {k: _free_port() for k in ("ctld", "d", "dbd", "db")}
        self._start_munge()
        self._start_db(ports)
        self._write_configs(ports)
        self._spawn("slurmdbd", [_exe("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: self._run("sacctmgr", "-n", "show", "cluster", timeout=10).returncode == 0)
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-i"])
        self._wait("slurmctld", lambda: self._run("scontrol", "ping", timeout=10).returncode == 0)
        self._spawn("slurmd", [_exe("slurmd"), "-D"])

        def node_idle() -> bool:
            state = self._run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False).stdout.strip()
            if state.startswith(("drain", "down", "inval")):
                self._run("scontrol", "update", f"nodename={self.node}", "state=resume", check=False)
            return state.startswith(("idle", "mixed", "allocated"))

        self._wait("the node to be idle", node_idle)

    def _start_munge(self) -> None:
        key, sock = self.root / "munge" / "munge.key", self.root / "munge" / "munge.socket"
        subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        shutil.chown(self.root / "munge", "munge", "munge")
        shutil.chown(key, "munge", "munge")
        (self.root / "munge").chmod(0o700)
        key.chmod(0o600)
        self._spawn(
            "munged",
            [
                "setpriv",
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                _exe("munged"),
                "-F",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                f"--log-file={self.root / 'munge' / 'munged.log'}",
            ],
        )
        (self.root / "munge").chmod(0o711)  # clients (root, slurm) reach the socket; the key stays 0600
        self._wait(
            "munged",
            lambda: (
                subprocess.run(f"munge -S {sock} -n | unmunge -S {sock}", shell=True, capture_output=True).returncode
                == 0
            ),
        )

    def _start_db(self, ports: dict[str, int]) -> None:
        data, sock = self.root / "mysql", self.root / "mysql" / "mysqld.sock"
        shutil.chown(data, "mysql", "mysql")
        subprocess.run(
            [
                _exe("mariadb-install-db"),
                "--user=mysql",
                f"--datadir={data}",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self._spawn(
            "mariadbd",
            [
                _exe("mariadbd"),
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--pid-file={data / 'mysqld.pid'}",
                "--bind-address=127.0.0.1",
                f"--port={ports['db']}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                f"--log-error={self.root / 'log' / 'mariadbd.err'}",
            ],
        )
        self._wait(
            "mariadbd",
            lambda: subprocess.run(["mariadb-admin", "-S", str(sock), "ping"], capture_output=True).returncode == 0,
            timeout=60,
        )
        subprocess.run(
            [
                "mariadb",
                "-S",
                str(sock),
                "-e",
                "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; "
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;",
            ],
            check=True,
            capture_output=True,
        )

    def _write_configs(self, ports: dict[str, int]) -> None:
        r, sock = self.root, self.root / "munge" / "munge.socket"
        gpus = []
        for i in range(self.ngpus):
            dev = r / "fakegpu" / f"nvidia{i}"
            try:  # slurmd drops file-less GPUs; fake character devices look real enough
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))
            except OSError:
                dev.touch()
            gpus.append(dev)
        if self.ngpus:
            (r / "etc" / "gres.conf").write_text(
                f"AutoDetect=off\nNodeName={self.node} Name=gpu File={r}/fakegpu/nvidia[0-{self.ngpus - 1}]\n"
            )
        auth = f"AuthInfo=socket={sock},cred_expire=10"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=trmtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    auth,
                    "MpiDefault=none",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "DefMemPerCPU=1000",
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=bf_interval=2,sched_interval=2",
                    "MailProg=/bin/true",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",
                    "MaxArraySize=1001",
                    "MinJobAge=300",
                    "KillWait=30",  # SLURM's default: time to checkpoint between TERM and KILL
                    f"StateSaveLocation={r}/state/ctld",
                    f"SlurmdSpoolDir={r}/state/d",
                    f"SlurmctldPidFile={r}/run/slurmctld.pid",
                    f"SlurmdPidFile={r}/run/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    f"SlurmctldPort={ports['ctld']}",
                    f"SlurmdPort={ports['d']}",
                    "JobAcctGatherType=jobacct_gather/linux",
                    "JobAcctGatherFrequency=30",
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=localhost",
                    f"AccountingStoragePass={sock}",  # the munge socket for talking to slurmdbd
                    f"AccountingStoragePort={ports['dbd']}",
                    "JobCompType=jobcomp/none",
                    "GresTypes=gpu" if self.ngpus else "",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.ncpus} RealMemory={self.mem_mb} "
                    + (f"Gres=gpu:{self.ngpus} " if self.ngpus else "")
                    + "State=UNKNOWN",
                    "PreemptType=preempt/partition_prio",
                    "PreemptMode=REQUEUE",
                    f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1",
                    f"PartitionName={URGENT_PARTITION} Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 "
                    "PreemptMode=OFF",
                    "",
                ]
            )
        )
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.touch(mode=0o600)
        dbd.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    auth,
                    "DbdHost=localhost",
                    f"DbdPort={ports['dbd']}",
                    "SlurmUser=root",
                    f"LogFile={r}/log/slurmdbd.log",
                    f"PidFile={r}/run/slurmdbd.pid",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={ports['db']}",
                    "StorageUser=slurm",
                    "StoragePass=slurmpw",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        dbd.chmod(0o600)

    def stop(self) -> None:
        """Cancel every job, stop the daemons (newest first), delete the folder."""
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            self._run("scancel", "--full", "--signal=KILL", "-u", "root", check=False)
            self._run("scancel", "-u", "root", check=False)
            end = time.monotonic() + 15
            while time.monotonic() < end:
                out = self._run("squeue", "-h", "-o", "%i", check=False).stdout.strip()
                if not out:
                    break
                time.sleep(0.3)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._kill_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Job processes (slurmstepd, batch scripts, srun, tasks) can outlive slurmd; they all carry
        this cluster's SLURM_CONF in their environment, which marks them as ours."""
        marker = f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), 9)
            except (OSError, ValueError):
                continue
