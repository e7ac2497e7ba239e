"""Monitoring plots of a model version, drawn from the monitoring tables (a row per day and
metric: small, collected): estimated vs realized ROC AUC over the days with their bands, and a
heatmap of drift (PSI) per input and day.

Example::

    performance = rows_of_model(lake.read("monitoring", "performance"), "flight_delay", "3", days=30)
    figures = monitoring_plots(performance, rows_of_model(lake.read("monitoring", "drift"), "flight_delay", "3", days=30))
    save_plots(figures, Path(".sparkfs/monitoring/plots/flight_delay/v3"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

PERFORMANCE_PNG, DRIFT_PNG = "performance_roc_auc.png", "drift_psi_heatmap.png"


def performance_figure(rows: list[dict[str, object]], metric: str = "roc_auc") -> Figure:
    """Estimated (CBPE / DLE) and realized ``metric`` per day, each with its band, and the
    reference's level."""
    figure = Figure(figsize=(8, 4))
    ax = figure.subplots()
    chosen = [r for r in rows if r["metric"] == metric]
    days = sorted({str(r["chunk"]) for r in chosen})
    position = {d: i for i, d in enumerate(days)}
    for method, color in (("cbpe", "tab:blue"), ("dle", "tab:blue"), ("realized", "tab:orange")):
        points = sorted((position[str(r["chunk"])], r) for r in chosen if r["method"] == method)
        if not points:
            continue
        x = [p for p, _ in points]
        value = [float(r["value"]) for _, r in points]  # type: ignore[arg-type]
        low = [float(r["lower"] if r["lower"] is not None else r["value"]) for _, r in points]  # type: ignore[arg-type]
        high = [float(r["upper"] if r["upper"] is not None else r["value"]) for _, r in points]  # type: ignore[arg-type]
        label = "realized" if method == "realized" else f"estimated ({method.upper()})"
        ax.plot(x, value, marker="o", color=color, label=label)
        ax.fill_between(x, low, high, color=color, alpha=0.2)
    references = {float(r["reference_value"]) for r in chosen if r["reference_value"] is not None}  # type: ignore[arg-type]
    for level in references:
        ax.axhline(level, linestyle="--", color="grey", label="reference (test split)")
        break
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=f"{metric}: estimated before the labels, realized after")
    if chosen:
        ax.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return figure


def drift_figure(rows: list[dict[str, object]], metric: str = "psi") -> Figure:
    """A heatmap of ``metric`` per column (rows) and day (columns)."""
    chosen = [r for r in rows if r["metric"] == metric]
    features = sorted({str(r["feature"]) for r in chosen})
    days = sorted({str(r["chunk"]) for r in chosen})
    grid = np.full((len(features), len(days)), np.nan)
    for r in chosen:
        grid[features.index(str(r["feature"])), days.index(str(r["chunk"]))] = float(r["value"])  # type: ignore[arg-type]
    figure = Figure(figsize=(max(6, 0.3 * len(days) + 3), max(3, 0.25 * len(features) + 1.5)))
    ax = figure.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="Reds", vmin=0, vmax=max(0.3, float(np.nanmax(grid)) if chosen else 0.3))
    ax.set_yticks(range(len(features)), features, fontsize=7)
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right", fontsize=7)
    ax.set(title=f"{metric.upper()} against the reference, per column and day")
    figure.colorbar(image, ax=ax)
    figure.tight_layout()
    return figure


def monitoring_plots(performance_rows: list[dict[str, object]], drift_rows: list[dict[str, object]]
                     ) -> dict[str, Figure]:
    """The two figures of a model version's rows (:func:`~sparkfs.monitoring.tables.rows_of_model`)."""
    return {PERFORMANCE_PNG: performance_figure(performance_rows), DRIFT_PNG: drift_figure(drift_rows)}


def save_plots(figures: dict[str, Figure], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, figure in figures.items():
        path = folder / file
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths
