"""The report of a study of several objectives: its Pareto front (two objectives: one
panel with the front as a step line and the region it dominates shaded; more: one panel per
pair of objectives), the hypervolume against trials and compute, and the Pareto set as a
table. Feasible trials are filled markers, infeasible ones hollow; the base model is a
diamond. Series carry a ``gid`` (``feasible``, ``infeasible``, ``pareto``, ``front``,
``base``, ``hypervolume``) as in ``_plots``.

The Pareto set, reference point and hypervolume follow ``Study.pareto`` /
``reference_point`` / ``hypervolume``: feasible complete trials only; the reference point
is the base model's values where scored, else the worst feasible value of each objective.
"""

from __future__ import annotations

from itertools import combinations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from llmhpo._format import fmt
from llmhpo.goals import signed
from llmhpo.pareto import hypervolume, non_dominated
from llmhpo.report._data import StudyData, Trial
from llmhpo.report._page import Table, duration
from llmhpo.report._plots import C_BASE, C_BEST, C_TRIAL, _grid, _int_ticks, time_unit

C_FRONT = "#e4572e"


def _directions(sd: StudyData) -> list[str]:
    return [d for _, d in sd.objectives]


def scored(sd: StudyData) -> list[Trial]:
    """Complete trials with a value for every objective (feasible or not)."""
    return [t for t in sd.complete if t.values is not None]


def pareto(sd: StudyData, trials: list[Trial] | None = None) -> list[Trial]:
    """The Pareto set of the feasible ones of ``trials`` (default: all), by the first objective."""
    ok = [t for t in (scored(sd) if trials is None else trials) if t.feasible and t.values is not None]
    if not ok:
        return []
    d = _directions(sd)
    keep = non_dominated([signed(d, t.values) for t in ok])
    return sorted((t for t, k in zip(ok, keep) if k), key=lambda t: (signed(d, t.values), t.number))


def reference_point(sd: StudyData) -> list[float] | None:
    """Per objective: the base model's value where scored, else the worst feasible value."""
    ok = [t.values for t in scored(sd) if t.feasible]
    if not ok:
        return None
    base = sd.base_values or [None] * len(sd.objectives)
    return [b if b is not None else (max(col) if d == "minimize" else min(col))
            for b, d, col in zip(base, _directions(sd), zip(*ok))]


def hypervolume_so_far(sd: StudyData, by: str = "number") -> tuple[list[float], list[float]]:
    """(x, hypervolume of the Pareto set so far) after each finished trial, against the final
    reference point: x is the trial number (``by="number"``) or the compute seconds spent by
    the trials finished so far (``"compute"``, in the order they finished)."""
    ref = reference_point(sd)
    if ref is None:
        return [], []
    d = _directions(sd)
    r = signed(d, ref)
    finished = [t for t in sd.trials if t.state not in ("RUNNING", "WAITING", "INTERRUPTED")]
    if by != "number":
        finished = sorted(finished, key=lambda t: (t.end is None, t.end or 0.0, t.number))
    xs, hv, front, spent = [], [], np.empty((0, len(d))), 0.0
    for t in finished:
        spent += t.compute_s
        if t.values is not None and t.feasible:
            Y = np.vstack([front, signed(d, t.values)])
            front = Y[non_dominated(Y)]
        xs.append(float(t.number) if by == "number" else spent)
        hv.append(hypervolume(front, r) if len(front) else 0.0)
    return xs, hv


# ---------------------------------------------------------------------- figures
def _staircase(sd: StudyData, i: int, j: int, front: list[Trial], ref: list[float] | None):
    """Corners of the 2-D front of objectives i, j (a step line), and of the region it
    dominates up to the reference point; in the objectives' own units."""
    d = [_directions(sd)[i], _directions(sd)[j]]
    pts = sorted(signed(d, [t.values[i], t.values[j]]) for t in front)
    line = [pts[0]]
    for a, b in zip(pts, pts[1:]):
        line += [[b[0], a[1]], b]
    area = None
    if ref is not None:
        r = signed(d, [ref[i], ref[j]])
        inside = [p for p in pts if p[0] < r[0] and p[1] < r[1]]
        if inside:
            area = [[inside[0][0], r[1]], inside[0]]
            for a, b in zip(inside, inside[1:]):
                area += [[b[0], a[1]], b]
            area += [[r[0], inside[-1][1]], r]
    unsign = (lambda ps: [signed(d, p) for p in ps])  # negating twice is the identity
    return unsign(line), None if area is None else unsign(area)


def _label(sd: StudyData, k: int) -> str:
    m, d = sd.objectives[k]
    return f"{m} ({'higher' if d == 'maximize' else 'lower'} is better)"


def _pair_panel(ax, sd: StudyData, i: int, j: int, front: list[Trial], ref, numbers: bool) -> None:
    done = scored(sd)
    ok, bad = [t for t in done if t.feasible], [t for t in done if not t.feasible]
    ax.scatter([t.values[i] for t in ok], [t.values[j] for t in ok], s=24, color=C_TRIAL, alpha=0.6,
               label=f"feasible trial ({len(ok)})", gid="feasible", zorder=3)
    if bad:
        ax.scatter([t.values[i] for t in bad], [t.values[j] for t in bad], s=26, facecolor="none",
                   edgecolor=C_BASE, lw=1.0, label=f"infeasible trial ({len(bad)})", gid="infeasible", zorder=2)
    if front:
        ax.scatter([t.values[i] for t in front], [t.values[j] for t in front], s=46, color=C_FRONT,
                   edgecolor="k", lw=0.6, label=f"Pareto set ({len(front)})", gid="pareto", zorder=5)
        if len(sd.objectives) == 2:
            line, area = _staircase(sd, i, j, front, ref)
            ax.plot(*zip(*line), color=C_FRONT, lw=1.6, gid="front", zorder=4)
            if area is not None:
                ax.fill(*zip(*area), color=C_FRONT, alpha=0.08, lw=0, gid="dominated", zorder=1,
                        label="dominated region (its area: the hypervolume)")
        if numbers:
            for t in front:
                ax.annotate(str(t.number), (t.values[i], t.values[j]), xytext=(4, 4), textcoords="offset points",
                            fontsize=7.5, color="#222222", zorder=6)
    bv = sd.base_values
    if bv is not None and bv[i] is not None and bv[j] is not None:
        ax.scatter([bv[i]], [bv[j]], marker="D", s=60, color="k", label="base model", gid="base", zorder=6)
    ax.set_xlabel(_label(sd, i))
    ax.set_ylabel(_label(sd, j))
    if not done:
        ax.text(0.5, 0.5, "no complete trial yet", transform=ax.transAxes, ha="center", color=C_BASE)


def plot_front(sd: StudyData) -> Figure | None:
    """Two objectives: every complete trial, the Pareto front as a step line with the trial
    numbers of its points, the base model. Three or more: a panel per pair of objectives,
    the Pareto set (of all objectives) highlighted. None for one objective."""
    m = len(sd.objectives)
    if m < 2:
        return None
    front, ref = pareto(sd), reference_point(sd)
    pairs = list(combinations(range(m), 2))
    if m == 2:
        fig, ax = plt.subplots(figsize=(8.2, 6.0))
        axes = [ax]
    else:
        fig, axes = _grid(len(pairs), width=4.6, height=3.9)
    for ax, (i, j) in zip(axes, pairs):
        _pair_panel(ax, sd, i, j, front, ref, numbers=m == 2 or len(front) <= 12)
    axes[0].legend(loc="best", framealpha=0.85)
    what = "Pareto front" if m == 2 else "Pareto set, each pair of objectives"
    fig.suptitle(f"{sd.name}: {what}, {sd.optimizer}", fontsize=12)
    fig.tight_layout()
    return fig


def plot_hypervolume(sd: StudyData) -> Figure | None:
    """The hypervolume of the Pareto set so far against the trial number and against the
    compute spent (the trials' own time summed). None for one objective or no feasible trial."""
    if len(sd.objectives) < 2:
        return None
    xn, hn = hypervolume_so_far(sd, "number")
    if not xn:
        return None
    xc, hc = hypervolume_so_far(sd, "compute")
    div, unit = time_unit(xc[-1] if xc else 0.0)
    fig, (a_n, a_c) = plt.subplots(1, 2, figsize=(12.5, 4.0), sharey=True)
    a_n.step(xn, hn, where="post", color=C_BEST, lw=2, gid="hypervolume", label=f"hypervolume: {hn[-1]:.4g}")
    a_c.step([x / div for x in xc], hc, where="post", color=C_BEST, lw=2, gid="hypervolume")
    _int_ticks(a_n)
    a_n.set_xlabel("trial number")
    a_c.set_xlabel(f"compute spent ({sd.accelerator}-{unit}, trials' own time summed)")
    a_n.set_ylabel("hypervolume of the Pareto set (higher is better)")
    a_n.legend(loc="lower right", framealpha=0.85)
    fig.suptitle(f"{sd.name}: hypervolume of the feasible trials so far, {sd.optimizer}", fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- tables and facts
def pareto_table(sd: StudyData) -> Table:
    """The Pareto set: trial, each objective (and its change from the base model), params, time."""
    params = list(sd.space.names)
    bv = sd.base_values or [None] * len(sd.objectives)
    header = ["trial"]
    for (m, _), b in zip(sd.objectives, bv):
        header += [m] + (["vs base"] if b is not None else [])
    header += params + ["trial time"]
    rows = []
    for t in pareto(sd):
        row = [str(t.number)]
        for v, b in zip(t.values, bv):
            row += [fmt(v)] + ([f"{v - b:+.3g}"] if b is not None else [])
        rows.append(row + [fmt(t.params.get(p)) for p in params] + [duration(t.compute_s)])
    return Table(header, rows, numeric=set(range(len(header))))


def front_facts(sd: StudyData) -> list[tuple[str, str]]:
    """The Pareto set's size, its hypervolume and reference point, and the feasible share."""
    front, ref = pareto(sd), reference_point(sd)
    out = [("objectives", ", ".join(f"{m} ({d})" for m, d in sd.objectives))]
    if not front:
        return out + [("Pareto set", "no feasible complete trial")]
    out.append(("Pareto set", f"{len(front)} trial(s): " + ", ".join(str(t.number) for t in front)))
    hv = hypervolume_so_far(sd)[1][-1]
    where = "the base model's values" if sd.base_values and all(b is not None for b in sd.base_values) else \
        "the worst feasible values" if not sd.base_values else "the base model's values, else the worst feasible"
    out.append(("hypervolume", f"{hv:.4g} against ({', '.join(f'{v:.4g}' for v in ref)}): {where}"))
    done = scored(sd)
    if any(t.constraints is not None for t in done):
        out.append(("feasible", f"{sum(t.feasible for t in done)} of {len(done)} complete trials"))
    return out
