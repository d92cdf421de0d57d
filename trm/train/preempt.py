"""Preemption and time limits: signals only set a flag; the loop acts at the next step boundary.

The scheduler's warning (SLURM `--signal=USR2@90`, LSF `-wa USR2 -wt`) and SIGTERM are caught; at
the next step the ranks agree (one all-reduce), rank 0 saves a checkpoint and every rank exits with
EXIT_REQUEUE. The cluster layer turns that code into a requeue; `train.resume=auto` picks it up.
"""

from __future__ import annotations

import signal
import time

EXIT_REQUEUE = 75  # EX_TEMPFAIL: "checkpointed, please requeue"
EXIT_FAILED = 1
EXIT_USAGE = 2


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
        self.received = signal.Signals(signum).name

    def local_reason(self) -> str | None:
        if self.received:
            return f"signal {self.received}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "time limit"
        return None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
