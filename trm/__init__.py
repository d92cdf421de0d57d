"""trm: Tiny Recursive Models (arXiv 2510.04871) on a laptop and on SLURM/LSF GPU clusters."""

__version__ = "0.1.0"
