"""What a training run reports besides checkpoints: ``metrics.csv``, ``learning_curve.png``, ``summary.json``.

Every file is written atomically by rank 0. ``metrics.csv`` has one row per epoch
(all epochs, also those before a resume; NaN written as an empty cell), columns
from the objective; the learning curve plots the training and validation loss and
the objective's validation errors against epoch; ``summary.json`` holds the best
epoch and the test metrics of the best weights.
"""

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"
SUMMARY_FILE = "summary.json"


def write_metrics(path: Path, history: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    """``history`` rows as CSV with ``columns`` (absent values and NaN as empty cells)."""
    from ..io import atomic_write

    with atomic_write(path, "w") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({key: ("" if isinstance(row.get(key), float) and math.isnan(row[key]) else row.get(key))
                             for key in columns})


def plot_learning_curve(path: Path, history: List[Dict[str, Any]], best_epoch: int, series: Sequence) -> None:
    """Loss and validation errors (``series``: ``(column, label)`` pairs) against epoch, written
    atomically as PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ..io import atomic_path

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, error_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row["train_loss"] for row in history], "o-", ms=3, label="training")
    loss_axes.plot(epochs, [row["val_loss"] for row in history], "o-", ms=3, label="validation (EMA)")
    loss_axes.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for column, label in series:
        error_axes.plot(epochs, [row[column] for row in history], "o-", ms=3, label=label)
    error_axes.set(xlabel="epoch", ylabel="validation error", yscale="log", title="validation errors (EMA)")
    for axes in (loss_axes, error_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch > 0:
            axes.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best (epoch {best_epoch})")
        axes.legend(fontsize=8)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """``summary`` as indented JSON; a value the json module cannot encode is written as null."""
    from ..io import atomic_write

    with atomic_write(path) as stream:
        json.dump(summary, stream, indent=1, default=lambda v: None)
