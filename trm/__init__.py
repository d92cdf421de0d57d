"""trm: Tiny Recursive Models (arXiv 2510.04871) on a laptop and on SLURM/LSF GPU clusters."""

import importlib.util
import sys

__version__ = "0.1.0"

# The tools run from a checkout with whatever `python` comes first on PATH; a missing core dependency
# should say how to get the environment, not end in an ImportError deep inside a module. submitit,
# wandb and matplotlib stay optional here: a GPU node's python may lack them and still train.
_CORE = {"numpy": "numpy", "yaml": "pyyaml", "filelock": "filelock", "jinja2": "jinja2", "torch": "torch"}
_missing = [pkg for mod, pkg in _CORE.items() if importlib.util.find_spec(mod) is None]
if _missing:
    raise SystemExit(
        f"error: this Python ({sys.executable}) lacks {', '.join(_missing)}, which trm needs. Run ./setup.sh "
        "once, then use .venv/bin/python (or `source .venv/bin/activate`) for the tools."
    )
