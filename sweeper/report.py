"""Human-readable tables of sweeps: the trial table, the end-of-sweep summary."""

from __future__ import annotations

from typing import Any

from sweeper.results import ERRORED, Summary


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Render dicts as a plain-text table with aligned columns."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[cell_text(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def format_summary(summary: Summary) -> str:
    """The end-of-sweep summary: counts, the best trial and the per-point seed spread."""
    metric = summary.metric
    lines = [
        f"sweep {summary.name}: {summary.n_completed}/{summary.n_trials} trials "
        f"completed, {summary.n_errored} errored",
    ]
    if summary.best_trial is not None:
        best = summary.trial(summary.best_trial)
        lines.append(
            f"best trial {best.trial_id} (seed {best.seed}, replicate {best.replicate}, "
            f"{params_text(best.params)}): {metric} = {best.metrics[metric]:.6g}"
        )
    point = best_point_text(summary)
    if point:
        lines.append(point)
    groups = group_rows(summary)
    if groups:
        lines += ["", format_table(groups)]
    for t in summary.trials:
        if t.status == ERRORED:
            lines.append(f"errored: {t.trial_id}: {t.error}")
    return "\n".join(lines)


def best_point_text(summary: Summary) -> str | None:
    """``best point (mean over 3 seeds): suggestion 5, learning_rate=...: val_loss = 1.2 ± 0.1``."""
    point = summary.best_point
    if point is None:
        return None
    which = "" if point.suggestion is None else f"suggestion {point.suggestion}, "
    return (
        f"best point (mean over {len(point.seeds)} seeds): {which}{params_text(point.params)}: "
        f"{summary.metric} = {point.mean:.6g} ± {point.std:.3g}"
    )


def group_rows(summary: Summary) -> list[dict[str, Any]]:
    """One row per hyperparameter point (in suggestion order): the metric's mean and std."""
    return [
        {
            **({"suggestion": g.suggestion} if g.suggestion is not None else {}),
            "params": params_text(g.params),
            "seeds": len(g.seeds),
            "trials": g.n_trials,
            f"{summary.metric} mean": g.mean,
            "std over seeds": g.std,
        }
        for g in summary.groups
    ]


def params_text(params: dict[str, Any]) -> str:
    """``key=value, ...`` for searched values, or ``(no search)``."""
    return ", ".join(f"{k}={cell_text(v)}" for k, v in params.items()) or "(no search)"


def cell_text(value: Any) -> str:
    """A table cell: floats to 6 significant digits, None empty."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
