"""Figures of sweeps and replicate groups (loss curves, metrics, UMAPs), as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot: no
display is needed, no global backend is switched, and nothing stays registered after saving
(the figure is cleared and dropped, so dozens of groups don't accumulate memory).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from sweeper.report import params_text
from sweeper.results import SeedGroup, TrialEntry
from sweeper.verify.records import GroupVerdict

MAX_POINTS = 2000  # per curve; longer histories are thinned to keep figures fast and small
PANELS = (("train_loss", "train loss"), ("val_loss", "validation loss"))
# Later replicates are dashed, each with its own pattern, so a curve lying exactly on top of
# the reference (solid) still shows through the gaps.
DASHES = ((0, (5, 3)), (0, (2, 2)), (0, (7, 2, 1, 2)), (0, (1, 3)))


def thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``max_points + 1`` evenly strided points of ``n``, the last kept."""
    if n <= max_points:
        return np.arange(n)
    step = math.ceil(n / max_points)
    return np.unique(np.r_[np.arange(0, n, step), n - 1])


def replicate_curves_png(group: GroupVerdict, mark_epoch: int | None = None) -> bytes | None:
    """The loss curves of a verification group's compared replicates, overlaid, as a PNG.

    Args:
        group: One group of a verification (``members``, ``histories``).
        mark_epoch: An epoch to mark with a vertical line (the first divergence), if any.

    Returns:
        The PNG's bytes, the lowest replicate (the reference) first; None when fewer than two
        members have a history: one curve overlays nothing (a sweep without replicates has a
        group per trial, and a figure each would cost a sweep of 64 trials seconds).
    """
    replicate = {m.trial_id: m.replicate for m in group.members}
    trials = sorted(group.histories, key=lambda t: replicate.get(t, 0))
    if len(trials) < 2:
        return None
    curves = [(f"replicate {replicate.get(t, '?')} ({t})", group.histories[t]) for t in trials]
    title = f"seed {group.seed}: {group.status.replace('_', ' ')}"
    return loss_curves_png(curves, mark_epoch, title=title)


def loss_curves_png(
    curves: list[tuple[str, dict[str, list[float]]]],
    mark_epoch: int | None = None,
    title: str = "",
) -> bytes:
    """Plot train and validation loss of every replicate, overlaid, as a PNG.

    Args:
        curves: ``(label, history)`` per replicate, reference first; a history holds equal-length
            lists ``epoch``, ``train_loss`` and ``val_loss``.
        mark_epoch: An epoch to mark with a vertical line (the first divergence), if any.
        title: The figure's title.

    Returns:
        The PNG file's bytes.
    """
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS), sharex=True)
    # Fixed margins: a constrained layout would take twice as long, for this one fixed layout.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.84, wspace=0.25)
    fig.suptitle(_plain(title))
    for ax, (key, name) in zip(axes, PANELS, strict=True):
        for i, (label, history) in enumerate(curves):
            _draw_curve(ax, i, label, history, key)
        if mark_epoch is not None:
            ax.axvline(mark_epoch, color="crimson", linestyle=":", label="first divergence")
        ax.set(title=name, xlabel="epoch", ylabel=key)
        if _spans_decades([h[key] for _, h in curves]):
            ax.set_yscale("log")  # else an early drop flattens everything after it
            ax.yaxis.set_major_formatter(LogFormatter())  # 600, not 6 x 10^2
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1)))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", loc="best")
    return _png(fig, dpi=100)


def _draw_curve(ax: Any, i: int, label: str, history: dict[str, list[float]], key: str) -> None:
    index = thin(len(history["epoch"]))
    x = np.asarray(history["epoch"], dtype=float)[index]
    y = np.asarray(history[key], dtype=float)[index]
    style = {"marker": "o", "markersize": 4} if len(x) <= 50 else {}
    if i == 0:
        style.update(linestyle="-", linewidth=2.4, alpha=0.8)
    else:
        style.update(linestyle=DASHES[(i - 1) % len(DASHES)], linewidth=1.6, markersize=2.5)
    ax.plot(x, y, color=f"C{i % 10}", label=_plain(label), **style)


def _spans_decades(series: list[list[float]]) -> bool:
    """Whether positive values span more than a factor of 20 (a log axis then shows more)."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in series])
    values = values[np.isfinite(values)]
    return values.size > 0 and values.min() > 0 and values.max() > 20 * values.min()


def _plain(text: str) -> str:
    """Text shown as is: a ``$`` would otherwise start matplotlib's mathtext."""
    return text.replace("$", r"\$")


def metric_vs_params_png(trials: list[TrialEntry], metric: str) -> bytes:
    """One panel per searched hyperparameter: the metric of each trial against its value."""
    names = list(trials[0].params)
    fig = Figure(figsize=(4.2 * len(names), 3.6))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    seeds = sorted({t.seed for t in trials})
    for ax, name in zip(axes, names, strict=True):
        values = [t.params[name] for t in trials]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ticks = sorted({str(v) for v in values})
        for k, seed in enumerate(seeds):
            mine = [t for t in trials if t.seed == seed]
            xs = [t.params[name] if numeric else ticks.index(str(t.params[name])) for t in mine]
            ax.scatter(
                xs,
                [t.metrics.get(metric, np.nan) for t in mine],
                s=18,
                label=f"seed {seed}",
                color=f"C{k % 10}",
            )
        if not numeric:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30, fontsize="small")
        elif min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=_plain(name), ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    return _png(fig)


def seed_spread_png(groups: tuple[SeedGroup, ...], metric: str) -> bytes:
    """Mean ± std of the metric over seeds for each hyperparameter point."""
    fig = Figure(figsize=(max(5, 1.1 * len(groups)), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = [
        ("" if g.suggestion is None else f"#{g.suggestion} ") + params_text(g.params)
        for g in groups
    ]
    ax.errorbar(
        range(len(groups)),
        [g.mean for g in groups],
        yerr=[g.std for g in groups],
        fmt="o",
        capsize=4,
    )
    ax.set_xticks(
        range(len(groups)), [_plain(x) for x in labels], rotation=30, ha="right", fontsize="x-small"
    )
    ax.set(ylabel=f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (no timestamp or software tag: same figure, same bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def umap_png(coords: np.ndarray, obs: Any, keys: tuple[str, str], title: str) -> bytes:
    """Two panels of the same UMAP, coloured by ``keys[0]`` (cell type) and ``keys[1]`` (batch)."""
    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    for ax, key in zip(fig.subplots(1, 2), keys, strict=True):
        labels = obs[key].astype(str).to_numpy()
        names = sorted(set(labels))
        for i, name in enumerate(names):
            mask = labels == name
            colour = _colour(i, len(names))
            ax.scatter(*coords[mask].T, s=2, color=colour, label=name, rasterized=True)
        ax.set(title=f"z_i coloured by {key}", xticks=[], yticks=[])
        ax.legend(markerscale=4, fontsize="x-small", loc="center left", bbox_to_anchor=(1, 0.5))
    fig.subplots_adjust(left=0.02, right=0.85, wspace=0.45)
    return _png(fig)


def _colour(i: int, n: int) -> Any:
    return colormaps["tab20" if n > 10 else "tab10"](i % 20)
