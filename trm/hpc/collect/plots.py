"""PNG plots of a collected sweep: its metric against step for every run, and the final metric as bars.

    from trm.hpc.collect import collect
    from trm.hpc.collect.plots import plot_sweep
    for result in collect(["runs/maze_ablations"], baseline="baseline"):
        plot_sweep(result, Path("results"))   # results/<sweep>_curves.png, results/<sweep>_final.png

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module never
changes the backend of a notebook or GUI session that uses it.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trm.hpc.collect.rows import RunResult, SweepResult, higher_is_better
from trm.rundir import atomic_write_bytes

log = logging.getLogger(__name__)

BASELINE_COLOR = "black"
EXPECTED_COLOR = "tab:red"


def _scale(metric: str) -> float:
    return 100.0 if higher_is_better(metric) else 1.0  # accuracies and pass@K in percent


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if higher_is_better(metric) else metric


def _colors(rows: list[RunResult], baseline: str | None) -> dict[str, str | tuple[float, ...]]:
    others = [r.name for r in rows if r.name != baseline]
    cmap = matplotlib.colormaps["tab10" if len(others) <= 10 else "tab20"]
    colors: dict[str, str | tuple[float, ...]] = {name: cmap(i % cmap.N) for i, name in enumerate(others)}
    if baseline is not None:
        colors[baseline] = BASELINE_COLOR
    return colors


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(result: SweepResult, path: Path) -> bool:
    """Every run's eval metric against step on one figure; False (nothing written) when no run has an eval."""
    metric, scale = result.metric, _scale(result.metric)
    rows = [r for r in result.rows if r.curves.get(metric)]
    if not rows:
        return False
    colors = _colors(result.rows, result.baseline)
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    for r in rows:
        steps, values = zip(*r.curves[metric])
        is_baseline = r.name == result.baseline
        label = r.name + (" (baseline)" if is_baseline else "")
        label += "" if r.state == "done" else f" [{r.state}]"
        ax.plot(
            steps,
            [v * scale for v in values],
            marker="o",
            markersize=3.5,
            color=colors[r.name],
            linewidth=2.6 if is_baseline else 1.6,
            zorder=3 if is_baseline else 2,
            label=label,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(f"{result.name}: {metric} against step")
    ax.grid(alpha=0.3)
    if len(rows) <= 8:
        ax.legend(fontsize="small")
    else:  # a grid sweep: keep the curves visible, list the runs beside the axes
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=math.ceil(len(rows) / 30))
    _save(fig, path)
    return True


def _expected_value(row: RunResult, metric: str, baseline_final: float | None) -> float | None:
    if metric in row.expected:
        return row.expected[metric]
    if metric in row.expected_delta and baseline_final is not None:
        return baseline_final + row.expected_delta[metric]
    return None


def plot_final(result: SweepResult, path: Path) -> bool:
    """The final metric per run as bars, with deltas to the baseline; expectations as red ticks."""
    metric, scale = result.metric, _scale(result.metric)
    rows = result.rows
    if not any(metric in r.final and not math.isnan(r.final[metric]) for r in rows):
        return False
    base_final = None
    if result.baseline is not None:
        base_final = result.row(result.baseline).final.get(metric)
    colors = _colors(rows, result.baseline)
    fig = Figure(figsize=(max(6.0, 0.7 * len(rows) + 2.5), 5.5))
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    values = [r.final.get(metric, math.nan) for r in rows]
    heights = [0.0 if math.isnan(v) else v * scale for v in values]
    ax.bar(xs, heights, color=[colors[r.name] for r in rows], alpha=0.85, width=0.7)
    top = max(heights)
    unit = "pp" if higher_is_better(metric) else ""
    for x, r, v in zip(xs, rows, values):
        if math.isnan(v):
            ax.text(x, 0, "no eval", ha="center", va="bottom", fontsize="small", rotation=90)
            continue
        text = f"{v * scale:.1f}" if scale != 1 else f"{v:.3g}"
        delta = r.delta.get(metric)
        if delta is not None and r.name != result.baseline:
            text += f"\n{delta * scale:+.1f}{unit}" if scale != 1 else f"\n{delta:+.3g}"
        ax.text(
            x,
            v * scale,
            text,
            ha="center",
            va="bottom",
            fontsize="small",
            zorder=5,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0},
        )
    expected = [(x, _expected_value(r, metric, base_final)) for x, r in zip(xs, rows)]
    expected = [(x, e) for x, e in expected if e is not None]
    if expected:
        ex, ey = zip(*expected)
        ax.scatter(
            ex,
            [e * scale for e in ey],
            marker="_",
            s=900,
            linewidths=2.5,
            color=EXPECTED_COLOR,
            zorder=6,
            label="expected",
        )
        top = max(top, max(e * scale for e in ey))
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if base_final is not None:
        ax.axhline(base_final * scale, color=BASELINE_COLOR, linestyle="--", linewidth=1, zorder=1)
    if top > 0:
        ax.set_ylim(0, top * 1.18)  # room for the labels above the tallest bar
    names = [r.name + ("" if r.state == "done" else f"\n[{r.state}]") for r in rows]
    ax.set_xticks(xs, names, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_ylabel(_axis_label(metric))
    title = f"{result.name}: final {metric}"
    if result.baseline is not None:
        title += f" (labels: value and delta to '{result.baseline}')"
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def plot_sweep(result: SweepResult, out_dir: Path) -> list[Path]:
    """Write `<sweep>_curves.png` and `<sweep>_final.png` into `out_dir`; returns the files written."""
    written = []
    for suffix, plot in (("curves", plot_curves), ("final", plot_final)):
        path = Path(out_dir) / f"{result.name}_{suffix}.png"
        if plot(result, path):
            written.append(path)
        else:
            log.warning("%s: no run has an eval of %s yet: %s not drawn", result.name, result.metric, path.name)
    return written
