"""A collected sweep as CSV, as a printed table and as Markdown; every file written atomically.

write_csv(result, Path("results/maze_ablations.csv"))
print(format_table(result))
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trm.hpc.collect.rows import RunResult, SweepResult, higher_is_better
from trm.rundir import atomic_write_text

FIXED_COLUMNS = (
    "sweep",
    "name",
    "overrides",
    "num_params",
    "depth",
    "state",
    "attempts",
    "step",
    "total_steps",
    "epoch",
    "wall_time_s",
    "gpu_hours",
    "eval_step",
    "updated_at",
)


def columns(result: SweepResult) -> list[str]:
    cols = list(FIXED_COLUMNS)
    has_expected = {k for r in result.rows for k in r.expected}
    has_expected_delta = {k for r in result.rows for k in r.expected_delta}
    has_best = {k for r in result.rows for k in r.best}
    for metric in result.metrics:
        cols.append(f"{metric}:final")
        if higher_is_better(metric) is not None or metric in has_best:
            cols += [f"{metric}:best", f"{metric}:best_step"]
        if result.baseline is not None:
            cols.append(f"{metric}:delta")
        if metric in has_expected:
            cols.append(f"{metric}:expected")
        if metric in has_expected_delta:
            cols.append(f"{metric}:expected_delta")
    return cols + ["problems", "run_dir"]


def row_values(row: RunResult) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(row, name) for name in FIXED_COLUMNS}
    values["run_dir"] = str(row.run_dir.resolve())
    values["problems"] = "; ".join(row.problems)
    for metric, value in row.final.items():
        values[f"{metric}:final"] = value
    for metric, (value, step) in row.best.items():
        values[f"{metric}:best"], values[f"{metric}:best_step"] = value, step
    for metric, value in row.delta.items():
        values[f"{metric}:delta"] = value
    for metric, value in row.expected.items():
        values[f"{metric}:expected"] = value
    for metric, value in row.expected_delta.items():
        values[f"{metric}:expected_delta"] = value
    return values


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_text(header: list[str], records: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow([_csv_cell(record.get(col)) for col in header])
    return out.getvalue()


def write_csv(result: SweepResult, path: Path) -> None:
    atomic_write_text(path, csv_text(columns(result), (row_values(r) for r in result.rows)))


def _fmt_metric(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if higher_is_better(metric):  # accuracies and pass@K as percent, deltas in percentage points
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}%"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def _fmt_count(value: int | None) -> str:
    if value is None:
        return ""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _fmt_epoch(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return f"{epoch:.1f}" if epoch < 100 else f"{epoch:.0f}"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def table_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """The paper-style table of a sweep: its metric's final, best, delta and expectations per run."""
    m = result.metric
    header = [
        "name",
        "overrides",
        "params",
        "depth",
        "state",
        "att",
        "step",
        "epoch",
        "wall",
        "GPU-h",
        f"{m} final",
        "best",
        "@step",
    ]
    if result.baseline is not None:
        header.append("Δ")
    show_expected = any(m in r.expected for r in result.rows)
    show_expected_delta = any(m in r.expected_delta for r in result.rows)
    header += ["expected"] * show_expected + ["exp Δ"] * show_expected_delta
    etrm = any(r.etrm for r in result.rows)  # demo-encoder runs: the ETRM studies' columns side by side
    header += ["encoder", "mode", "explore", "pass@2", "train acc", "collapse"] * etrm + ["problems"]
    body = []
    for r in result.rows:
        best, best_step = r.best.get(m, (None, None))
        cells = [
            r.name + (" (baseline)" if r.name == result.baseline else ""),
            r.overrides,
            _fmt_count(r.num_params),
            _fmt_count(r.depth),
            r.state,
            _fmt_count(r.attempts),
            "" if r.step is None else str(r.step),
            _fmt_epoch(r.epoch),
            _fmt_duration(r.wall_time_s),
            "" if r.gpu_hours is None else f"{r.gpu_hours:.1f}",
            _fmt_metric(m, r.final.get(m)),
            _fmt_metric(m, best),
            "" if best_step is None else str(best_step),
        ]
        if result.baseline is not None:
            cells.append(_fmt_metric(m, r.delta.get(m), signed=True))
        if show_expected:
            cells.append(_fmt_metric(m, r.expected.get(m)))
        if show_expected_delta:
            cells.append(_fmt_metric(m, r.expected_delta.get(m), signed=True))
        if etrm:
            e = r.etrm
            collapse = r.final.get("eval/collapse_ratio")
            cells += [
                e.get("encoder", "none"),
                e.get("mode", ""),
                e.get("explore", ""),
                _fmt_metric("eval/arc/pass@2", r.final.get("eval/arc/pass@2")),
                _fmt_metric("train/accuracy", e.get("train_accuracy")),
                "" if collapse is None else f"{collapse:.3g}",
            ]
        cells.append("; ".join(r.problems))
        body.append(cells)
    return header, body


def format_table(result: SweepResult, max_problem_chars: int = 60) -> str:
    header, body = table_rows(result)
    body = [cells[:-1] + [_clip(cells[-1], max_problem_chars)] for cells in body]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(header)]
    left = {"name", "overrides", "state", "problems"}

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if h in left else c.rjust(w) for h, c, w in zip(header, cells, widths))
        return "  ".join(padded).rstrip()

    title = f"{result.name}  ({result.source}; metric {result.metric}"
    title += f"; baseline {result.baseline})" if result.baseline else ")"
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, body)])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_markdown(result: SweepResult) -> str:
    header, body = table_rows(result)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if h in ("name", "overrides", "state", "problems") else "---:" for h in header]
    title = f"### {result.name}\n\nMetric `{result.metric}`" + (
        f", deltas against `{result.baseline}` in percentage points." if result.baseline else "."
    )
    return "\n".join([title, "", line(header), line(align), *map(line, body)]) + "\n"
