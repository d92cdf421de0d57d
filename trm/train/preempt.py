"""Preemption, time limits and cancels: signals only set a flag; the loop acts at the next step boundary.

Two kinds of stop, told apart by the signal (docs/architecture.md, "Preemption is not cancel"):

- the scheduler's warning signal (SLURM `--signal=USR2@90`, LSF `-wa USR2 -wt`) and the trainer's own
  time limit mean "requeue me": rank 0 saves a checkpoint and every rank exits with EXIT_REQUEUE (75,
  trm.rundir);
  the cluster layer requeues the job and `train.resume=auto` continues.
- SIGTERM and SIGINT (scancel, bkill, Ctrl-C, a kill) mean "stop": the checkpoint is still saved (it
  keeps the work), but the ranks exit with EXIT_STOPPED (143, the shell's code for a TERM) and nothing
  requeues itself. The run is cancelled, resumable on request. A scheduler that preempts by TERM and
  requeues the job itself (SLURM PreemptMode=REQUEUE) restarts it anyway: the cluster layer counts
  that restart as a preemption (trm.hpc.job).
"""

from __future__ import annotations

import signal
import time

EXIT_USAGE = 2
STOP_SIGNALS = ("SIGTERM", "SIGINT")  # a cancel, never a request to requeue


class StopWatch:
    def __init__(self, signals: list[str], time_limit_minutes: float, margin_minutes: float) -> None:
        self.received: str | None = None
        self.start = time.monotonic()
        self.deadline = self.start + 60 * (time_limit_minutes - margin_minutes) if time_limit_minutes > 0 else None
        self._previous: dict[int, object] = {}
        for name in signals:
            sig = getattr(signal, name, None)
            if not isinstance(sig, signal.Signals):
                raise ValueError(f"train.signals: unknown signal '{name}' (e.g. SIGUSR2, SIGTERM)")
            self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: object) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.received not in STOP_SIGNALS:  # a cancel after a warning still means stop, not requeue
            self.received = name

    def local_reason(self) -> str | None:
        if self.received:
            return f"signal {self.received}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time limit"
        return None

    def cancelled(self) -> bool:
        """This rank got a stop signal (TERM, INT): exit with EXIT_STOPPED, not EXIT_REQUEUE."""
        return self.received in STOP_SIGNALS

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
