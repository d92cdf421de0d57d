"""`tools/collect.py`: collect sweeps into CSV, a printed table, Markdown and plots; optionally wandb sync.

python tools/collect.py jobs/maze_ablations.yaml
python tools/collect.py runs/maze_ablations/ --baseline baseline --markdown --append results/all.csv
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from trm.hpc.collect.output import format_markdown, format_table, write_csv
from trm.hpc.collect.rows import SweepResult, collect
from trm.hpc.collect.shared import append_shared
from trm.hpc.collect.sweep import CollectError
from trm.rundir import DEFAULT_METRIC, atomic_write_text


def wandb_offline_dirs(run_dir: Path) -> list[Path]:
    """A run's offline wandb segments, oldest first (`offline-run-<YYYYMMDD_HHMMSS>-<id>`, one a start)."""
    found = [*Path(run_dir).glob("wandb/offline-run-*"), *Path(run_dir).glob("offline-run-*")]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.name)


def sync_wandb(
    results: list[SweepResult], executable: str | None = None, timeout_s: float = 900.0
) -> tuple[int, list[str]]:
    """`wandb sync` every run's offline segments; returns (runs synced, errors). Never raises for wandb."""
    exe = executable or shutil.which("wandb")
    if exe is None:
        return 0, [
            "--wandb: the `wandb` command is not installed (pip install 'trm[wandb]'); the CSV and plots do not need it"
        ]
    synced, errors = 0, []
    for result in results:
        for row in result.rows:
            dirs = wandb_offline_dirs(row.run_dir)
            if not dirs:
                continue
            # All segments of a resumed run in one call: wandb uploads segments of one run id in start order.
            try:
                proc = subprocess.run([exe, "sync", *map(str, dirs)], capture_output=True, text=True, timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{result.name}/{row.name}: wandb sync did not run: {e}")
                continue
            if proc.returncode != 0:
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
                errors.append(f"{result.name}/{row.name}: wandb sync exited with {proc.returncode}: {tail[0]}")
            else:
                synced += 1
    return synced, errors


# ----------------------------------------------------------------------------------------------
# Command line (tools/collect.py)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/collect.py",
        description="Collect sweeps into results/<sweep>.csv, a printed table, Markdown and PNG plots.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SWEEP",
        help="a sweep spec (jobs/X.yaml), a jobs.txt, a folder of run directories (runs/X/) or "
        "a run folder; several ok",
    )
    p.add_argument(
        "--runs-root",
        metavar="DIR",
        help="where a spec's run directories live (default: its profile's runs_root, else runs)",
    )
    p.add_argument(
        "--baseline", metavar="RUN", help="the run deltas are measured against (default: the spec's baseline)"
    )
    p.add_argument(
        "--metric",
        metavar="NAME",
        help=f"the metric of the table and plots (default: the spec's, else {DEFAULT_METRIC})",
    )
    p.add_argument("--out", default="results", type=Path, metavar="DIR", help="output folder (default: results)")
    p.add_argument("--markdown", action="store_true", help="also write results/<sweep>.md")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--append",
        type=Path,
        metavar="FILE",
        help="also merge the rows into FILE, a CSV shared by several sweeps or users (locked)",
    )
    p.add_argument(
        "--lock-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for FILE's lock (default: 60)"
    )
    p.add_argument("--wandb", action="store_true", help="also `wandb sync` the runs' offline wandb folders")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from trm.config import ConfigError

    if args.out.exists() and not args.out.is_dir():
        print(
            f"error: --out {args.out} is a file; --out names the folder the results go to (default: results)",
            file=sys.stderr,
        )
        return 2
    if args.append is not None and args.append.is_dir():
        print(
            f"error: --append {args.append} is a folder; --append names the shared CSV file to merge into",
            file=sys.stderr,
        )
        return 2
    try:
        results = collect(args.inputs, args.runs_root, args.baseline, args.metric)
        for result in results:
            written = [args.out / f"{result.name}.csv"]
            write_csv(result, written[0])
            if args.markdown:
                written.append(args.out / f"{result.name}.md")
                atomic_write_text(written[-1], format_markdown(result))
            if not args.no_plots:
                # matplotlib takes about a second to import: only when plotting
                from trm.hpc.collect.plots import plot_sweep

                written += plot_sweep(result, args.out)
            if not args.quiet:
                print(format_table(result), end="\n\n")
            print(f"{result.name}: {len(result.rows)} runs -> {', '.join(map(str, written))}")
        if args.append is not None:
            added, replaced = append_shared(args.append, results, timeout_s=args.lock_timeout)
            print(f"{args.append}: {added} rows added, {replaced} rows of the same runs replaced")
    except (CollectError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write the results: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    if args.wandb:
        synced, errors = sync_wandb(results)
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        none_found = "" if synced or errors else " (no offline wandb folders found)"
        print(f"wandb: {synced} runs synced{none_found}")
        if errors:
            return 1
    return 0
