"""Plots of a comparison (matplotlib figures drawn off-screen, without pyplot's global state).

:func:`plot_accuracy_vs_flops`, :func:`plot_parameters` and :func:`plot_pareto`
each take the comparison loaded by :func:`torchgrow.report.load_comparison`
and write one PNG, as does :func:`plot_curves` (validation accuracy and loss per
epoch, mean over seeds). :func:`pareto_front` and :func:`epoch_curves` are the
pure computations behind them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

__all__ = [
    "epoch_curves",
    "pareto_front",
    "plot_accuracy_vs_flops",
    "plot_curves",
    "plot_parameters",
    "plot_pareto",
]

_DPI = 110


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost and accuracy.

    Parameters
    ----------
    points : sequence of (cost, accuracy)
        Lower cost and higher accuracy are better.

    Returns
    -------
    list of int
        Indices of the non-dominated points, by increasing cost. A point is
        dominated when another has cost <= and accuracy >= with at least one
        strict; of exact duplicates the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _label(comparison: Mapping[str, Any], method: str) -> str:
    return comparison["methods"][method]["description"].get("name", method)


def plot_accuracy_vs_flops(comparison: Mapping[str, Any], path: str | Path) -> Path:
    """Validation accuracy after each epoch against the training FLOPs spent so far.

    One line per run, coloured by method; growth events are the kinks where a
    line's slope (FLOPs per epoch) changes.

    Parameters
    ----------
    comparison : mapping
        From :func:`torchgrow.report.load_comparison`.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    methods = list(comparison["methods"])
    colours = _colours(methods)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for method in methods:
        for k, run in enumerate(comparison["methods"][method]["runs"]):
            rows = run["metrics"]
            xs = [r["training_flops"] for r in rows]
            ys = [100 * r["val_accuracy"] for r in rows]
            ax.plot(xs, ys, "-o", ms=2.5, lw=1.2, color=colours[method], alpha=0.85,
                    label=_label(comparison, method) if k == 0 else None)  # fmt: skip
    ax.set_xlabel("training FLOPs spent")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Accuracy vs training compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return Path(path)


def plot_parameters(comparison: Mapping[str, Any], path: str | Path) -> Path:
    """Parameters after each epoch against training FLOPs, growth events marked.

    Parameters
    ----------
    comparison : mapping
        From :func:`torchgrow.report.load_comparison`.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    methods = list(comparison["methods"])
    colours = _colours(methods)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for method in methods:
        for k, run in enumerate(comparison["methods"][method]["runs"]):
            # epoch ends and structural changes in order; an event at an epoch end comes after it
            points = [(r["training_flops"], 0, r["parameters"]) for r in run["metrics"]]
            points += [(e["training_flops"], 1, e["parameters_after"]) for e in run["events"]]
            points.sort(key=lambda p: (p[0], p[1]))
            ax.step([p[0] for p in points], [p[2] for p in points], where="post", lw=1.2,
                    color=colours[method], alpha=0.85,
                    label=_label(comparison, method) if k == 0 else None)  # fmt: skip
            grow = [e for e in run["events"] if e["kind"] in comparison["growth_kinds"]]
            if grow:
                ax.scatter([e["training_flops"] for e in grow],
                           [e["parameters_after"] for e in grow], marker="^", s=28,
                           color=colours[method], edgecolors="black", linewidths=0.5,
                           zorder=3)  # fmt: skip
    ax.scatter([], [], marker="^", s=28, color="white", edgecolors="black", linewidths=0.5,
               label="growth event")  # fmt: skip
    ax.set_xlabel("training FLOPs spent")
    ax.set_ylabel("parameters")
    ax.set_title("Model size over training (triangles: growth events)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return Path(path)


def plot_pareto(comparison: Mapping[str, Any], path: str | Path) -> Path:
    """Final test accuracy against final parameters; the Pareto front of the method means.

    Parameters
    ----------
    comparison : mapping
        From :func:`torchgrow.report.load_comparison`.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    methods = list(comparison["methods"])
    colours = _colours(methods)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    means: list[tuple[float, float]] = []
    for method in methods:
        runs = comparison["methods"][method]["runs"]
        xs = [r["result"]["parameters"] for r in runs]
        ys = [100 * r["result"]["test_accuracy"] for r in runs]
        ax.scatter(xs, ys, s=14, alpha=0.45, color=colours[method])
        mean = (sum(xs) / len(xs), sum(ys) / len(ys))
        means.append(mean)
        ax.scatter(*mean, s=60, color=colours[method], edgecolors="black", linewidths=0.6,
                   label=_label(comparison, method), zorder=3)  # fmt: skip
    front = pareto_front(means)
    if len(front) > 1:
        ax.plot([means[i][0] for i in front], [means[i][1] for i in front], "--", color="grey",
                lw=1, zorder=2, label="Pareto front (means)")  # fmt: skip
    ax.set_xlabel("final parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs size (small dots: seeds; large: mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return Path(path)


def epoch_curves(
    comparison: Mapping[str, Any], method: str, key: str
) -> tuple[list[int], list[float], list[float], list[float]] | None:
    """One method's ``key`` (``"val_accuracy"``, ``"val_loss"``) per epoch over its seeds.

    A run's value at an epoch is its last metrics row of that epoch; only epochs
    every seed has a value at are kept.

    Returns
    -------
    (epochs, mean, low, high) or None
        The mean over seeds and its range, or ``None`` when some run records no ``key``.
    """
    series = []
    for run in comparison["methods"][method]["runs"]:
        by_epoch = {int(r["epoch"]): r.get(key) for r in run["metrics"]}
        if not by_epoch or any(v is None for v in by_epoch.values()):
            return None
        series.append(by_epoch)
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    if not epochs:
        return None
    values = [[float(s[e]) for s in series] for e in epochs]
    return (
        epochs,
        [sum(v) / len(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def plot_curves(comparison: Mapping[str, Any], path: str | Path) -> Path:
    """Validation accuracy and loss after each epoch, mean over seeds with their range shaded;
    ticks under each method's curve mark the epochs its growth events fell in.

    Parameters
    ----------
    comparison : mapping
        From :func:`torchgrow.report.load_comparison`.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    methods = list(comparison["methods"])
    colours = _colours(methods)
    fig = Figure(figsize=(10.5, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(
        axes, ("val_accuracy", "val_loss"), ("validation accuracy", "validation loss"), strict=True
    ):
        for method in methods:
            curve = epoch_curves(comparison, method, key)
            if curve is None:
                continue
            epochs, mean, low, high = curve
            c = colours[method]
            ax.plot(epochs, mean, lw=1.4, color=c, label=_label(comparison, method))
            ax.fill_between(epochs, low, high, color=c, alpha=0.15, lw=0)
            grown = sorted(
                {
                    int(e["epoch"])
                    for run in comparison["methods"][method]["runs"]
                    for e in run["events"]
                    if e["kind"] in comparison["growth_kinds"]
                }
            )
            at = [mean[epochs.index(e)] for e in grown if e in epochs]
            ax.scatter([e for e in grown if e in epochs], at, marker="|", s=120, color=c,
                       zorder=3)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("Validation accuracy (mean over seeds, range shaded)")
    axes[1].set_title("Validation loss (| : epochs with growth)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return Path(path)
