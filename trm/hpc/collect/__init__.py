"""The collector: a sweep's run directories into one table, results/<sweep>.csv, a printed table,
Markdown and PNG plots.

    python tools/collect.py jobs/maze_ablations.yaml             # a sweep spec: runs, baseline, expectations
    python tools/collect.py runs/maze_ablations/ --baseline baseline
    python tools/collect.py jobs/a.yaml runs/b/ --markdown --append results/all.csv

    from trm.hpc.collect import collect, write_csv
    for result in collect(["jobs/maze_ablations.yaml"]):
        write_csv(result, Path("results") / f"{result.name}.csv")

Reads only what the trainer and the cluster layer write (docs/run-directory.md): config.yaml,
summary.json, metrics.jsonl and status.json; it never scrapes wandb. A damaged run directory never
stops a collection: each defect becomes a line in that run's `problems` column and a warning, and
the other rows still come out. The modules, in the order data flows through them:

    rundir  read one run directory tolerantly            -> RunFiles
    sweep   what to collect: a spec or a folder           -> SweepEntry
    rows    one row per run, deltas, expectations         -> SweepResult
    output  CSV, printed table, Markdown (atomic writes)
    shared  a results file several collectors merge into, under a lock
    plots   eval metric against step, final metric as bars (matplotlib, imported on demand)
    cli     tools/collect.py, and `--wandb` (wandb sync of offline runs)
"""

from trm.hpc.collect.cli import main, sync_wandb, wandb_offline_dirs
from trm.hpc.collect.output import (
    columns,
    csv_text,
    format_markdown,
    format_table,
    row_values,
    table_rows,
    write_csv,
)
from trm.hpc.collect.rows import RunResult, SweepResult, collect, collect_sweep, higher_is_better
from trm.hpc.collect.rundir import RunFiles, config_as_text, flat_yaml, looks_like_run_dir, read_run
from trm.hpc.collect.shared import SHARED_LEASE_S, append_shared
from trm.hpc.collect.sweep import (
    DEFAULT_METRIC,
    CollectError,
    RunEntry,
    SweepEntry,
    resolve_input,
    sweep_from_folder,
    sweep_from_spec,
)

__all__ = [
    "DEFAULT_METRIC",
    "SHARED_LEASE_S",
    "CollectError",
    "RunEntry",
    "RunFiles",
    "RunResult",
    "SweepEntry",
    "SweepResult",
    "append_shared",
    "collect",
    "collect_sweep",
    "columns",
    "config_as_text",
    "csv_text",
    "flat_yaml",
    "format_markdown",
    "format_table",
    "higher_is_better",
    "looks_like_run_dir",
    "main",
    "read_run",
    "resolve_input",
    "row_values",
    "sweep_from_folder",
    "sweep_from_spec",
    "sync_wandb",
    "table_rows",
    "wandb_offline_dirs",
    "write_csv",
]
