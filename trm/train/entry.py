"""Command line of the trainer.

    python tools/train.py CONFIG.yaml [key=value ...]           # one process (CPU, one GPU, MPS)
    torchrun --nproc_per_node=4 tools/train.py CONFIG.yaml ...  # one node, 4 GPUs
    python -m trm.train CONFIG.yaml ...                         # same as tools/train.py
    trm-train CONFIG.yaml ...                                   # same: the console script pip installs

Overrides use the config tree's dotted keys (`arch.L_layers=4`) or the paper's names
(`lr=1e-4 ema=True +run_name=x`); see trm/config.py. The first word is the config file unless
it is a `key=value` override (a path may hold `=`, as grid run names do). Exit codes: 0 done, 75
checkpointed on the scheduler's warning signal or before the time limit (requeue me), 143
checkpointed and stopped on SIGTERM/SIGINT (cancelled; resume on request), 2 bad input, 1 anything
else.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from trm.config import ConfigError, is_override, load_config
from trm.data.format import DatasetError
from trm.train import dist
from trm.train.preempt import EXIT_USAGE

USAGE = "usage: tools/train.py [CONFIG.yaml] [key=value ...]   (e.g. trm/configs/quickstart.yaml train.max_steps=100)"


def main(argv: list[str] | None = None, on_error: Callable[[str], None] | None = None) -> int:
    """Train; `on_error` also gets the one-paragraph message of a refused start (the cluster layer
    records it in status.json)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    path = argv.pop(0) if argv and not is_override(argv[0]) else None
    from trm.train.checkpoint_manager import ResumeError
    from trm.train.init_weights import InitError
    from trm.train.loop import Trainer
    from trm.train.runlog import RunDirError

    env = trainer = None
    try:
        cfg = load_config(path, argv)
        env = dist.init(cfg.train.device)
        trainer = Trainer(cfg, env)
        return trainer.fit()
    except (ConfigError, DatasetError, RunDirError, ResumeError, InitError, dist.DeviceError) as e:
        rank = f"[rank {env.rank}] " if env is not None and env.distributed else ""
        print(f"{rank}error: {e}\n{USAGE}", file=sys.stderr)
        if on_error is not None:
            on_error(f"{type(e).__name__}: {e}")
        return EXIT_USAGE
    finally:
        # The trainer sits in reference cycles, and its DDP wrapper holds the process group and a Python
        # comm hook. Left to interpreter exit, a gloo worker thread that still touches Python then aborts
        # the process (SIGABRT, "terminate called without an active exception") after a clean run.
        trainer = None
        gc.collect()
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
