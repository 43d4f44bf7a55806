"""The report's figures, each a function ``StudyData -> matplotlib Figure`` (None when the
study has nothing to draw). Every series carries a ``gid`` (``complete``, ``best_so_far``,
``best``, ``failed``, ``pruned``, ``base``, ``trial``) so that tests and scripts can read
back what was drawn. Failed trials have no value: they are marked on a strip at the bottom
of an axis, never at a height of the value axis."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from llmhpo.report._data import StudyData, spans_decades  # noqa: E402
from llmhpo.space import Int  # noqa: E402

C_TRIAL, C_BEST, C_STAR, C_FAIL, C_BASE, C_PRUNED = "#3b75af", "#e4572e", "#ffc914", "#c0392b", "#555555", "#9a9a9a"
FAIL_Y = 0.03  # failures sit at this height in axes coordinates (a strip, not a value)

plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                     "grid.alpha": 0.25, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
                     "ytick.labelsize": 8, "legend.fontsize": 8, "figure.dpi": 100})


def _grid(n: int, width: float = 4.1, height: float = 3.1, ncols: int = 3, **kw):
    """A grid of n panels that fits a page: at most ``ncols`` across, unused panels hidden."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.5), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _better(sd: StudyData) -> str:
    return "higher is better" if sd.maximize else "lower is better"


def _y_axis(ax, values, label: str | None = None) -> None:
    """A log y axis where the values span decades (a best-so-far line near zero is then seen)."""
    if spans_decades(values):
        ax.set_yscale("log")
        vs = [v for v in values if v is not None and v > 0]
        _log_ticks(ax.yaxis, min(vs), max(vs))
    if label:
        ax.set_ylabel(label)


def _fail_strip(ax, xs, label: str | None = None, color: str = C_FAIL, size: float = 7) -> None:
    """Failed trials as crosses on a shaded strip along the bottom of ``ax``, below every
    value (call after the values are drawn and the y scale is set)."""
    if len(xs) == 0:
        return
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log" and lo > 0:
        ax.set_ylim(lo / (hi / lo) ** 0.09, hi)
    else:
        ax.set_ylim(lo - 0.09 * (hi - lo), hi)
    ax.add_patch(Rectangle((0, 0), 1, 2 * FAIL_Y, transform=ax.transAxes, color=C_FAIL, alpha=0.07, lw=0,
                           zorder=0))
    tr = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(xs, [FAIL_Y] * len(xs), "x", color=color, ms=size, mew=1.6, transform=tr, clip_on=False,
            label=label, gid="failed", zorder=4)


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Readable ticks on a log axis: 1-2-5 steps with plain numbers when it spans less than
    three decades (the default would label minor ticks as 2x10^0, 3x10^0, ...)."""
    if lo <= 0 or hi <= lo:
        return
    if math.log10(hi / lo) < 3:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _base_line(ax, value: float | None, label: str = "base model") -> None:
    if value is None:
        return
    ax.axhline(value, color=C_BASE, ls="--", lw=1.2, label=f"{label} ({value:.4g})", gid="base", zorder=2)


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, name) to show a duration of up to ``seconds`` in readable numbers."""
    if seconds < 180:
        return 1.0, "s"
    if seconds < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _int_ticks(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------- history
def plot_history(sd: StudyData) -> Figure:
    """The objective of each trial and the best so far, against the trial number and against
    wall-clock time; the base model's score as a reference; failures on a strip apart."""
    fig, (a_n, a_t) = plt.subplots(1, 2, figsize=(12.5, 4.3), sharey=True)
    done, failed = sd.complete, sd.failed
    pruned = [t for t in sd.of_state("PRUNED", "WAITING") if t.last_score is not None]
    t0 = sd.t0 or 0.0
    ends = [t.end - t0 for t in sd.trials if t.end is not None]
    div, unit = time_unit(max(ends, default=0.0))
    values = [t.value for t in done] + [t.last_score for t in pruned]
    if sd.base_score is not None:
        values.append(sd.base_score)

    def at(t, by):
        return t.number if by == "number" else ((t.end if t.end is not None else t0) - t0) / div

    for ax, by in ((a_n, "number"), (a_t, "time")):
        if done:
            ax.scatter([at(t, by) for t in done], [t.value for t in done], s=24, color=C_TRIAL, alpha=0.75,
                       label=f"complete trial ({len(done)})", gid="complete", zorder=3)
            bx, bv = sd.best_so_far(by)
            bx = [x if by == "number" else x / div for x in bx]
            last = max((at(t, by) for t in sd.trials if t.state in ("COMPLETE", "FAIL", "PRUNED")), default=bx[-1])
            if last > bx[-1]:  # the best so far holds until the last finished trial
                bx, bv = bx + [last], bv + [bv[-1]]
            ax.step(bx, bv, where="post", color=C_BEST, lw=2, label="best so far", gid="best_so_far", zorder=4)
            b = sd.best()
            ax.scatter([at(b, by)], [b.value], marker="*", s=220, color=C_STAR, edgecolor="k", lw=0.8,
                       label=f"best: trial {b.number} ({b.value:.4g})", gid="best", zorder=5)
        if pruned:
            ax.scatter([at(t, by) for t in pruned], [t.last_score for t in pruned], s=24, facecolor="none",
                       edgecolor=C_PRUNED, label=f"{'pruned / waiting' if any(t.state == 'WAITING' for t in pruned) else 'pruned'}"
                       f" ({len(pruned)}): score at its last rung", gid="pruned", zorder=2)
        _base_line(ax, sd.base_score)
        _y_axis(ax, values)
        _fail_strip(ax, [at(t, by) for t in failed], f"failed ({len(failed)}): no value" if failed else None)
        if not done and not pruned:
            ax.text(0.5, 0.5, "no complete trial yet", transform=ax.transAxes, ha="center", color=C_BASE)
    _int_ticks(a_n)
    a_n.set_xlabel("trial number")
    a_t.set_xlabel(f"wall-clock time since the first trial started ({unit})")
    a_n.set_ylabel(f"{sd.metric} ({_better(sd)})")
    a_n.legend(loc="best", framealpha=0.85)
    fig.suptitle(f"{sd.name}: {sd.metric} of each trial, {sd.optimizer}", fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- other metrics
def plot_metrics(sd: StudyData) -> Figure | None:
    """One panel per monitored metric (benchmarks, validation loss): its value on each
    complete trial, the best trial (by the objective) starred, the base model's value."""
    names = sd.monitored()
    if not names:
        return None
    fig, axes = _grid(len(names))
    best = sd.best()
    for ax, name in zip(axes, names):
        pts = [(t.number, t.scalars[name]) for t in sd.complete if name in t.scalars]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=C_TRIAL, alpha=0.75, gid="complete",
                   label="complete trial", zorder=3)
        if best is not None and name in best.scalars:
            ax.scatter([best.number], [best.scalars[name]], marker="*", s=200, color=C_STAR, edgecolor="k", lw=0.8,
                       gid="best", label=f"best trial by {sd.metric}", zorder=5)
        _base_line(ax, sd.base.get(name))
        _y_axis(ax, [p[1] for p in pts] + ([sd.base[name]] if name in sd.base else []))
        ax.set_title(name)
        ax.set_xlabel("trial number")
        _int_ticks(ax)
    axes[0].legend(loc="best", framealpha=0.85)
    fig.suptitle(f"{sd.name}: other metrics of each complete trial", fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- parameters
def _positions(var, values) -> tuple[list[float], list[str] | None]:
    """x positions of a variable's values: numbers as they are, categories as indices."""
    choices = getattr(var, "choices", None)
    if choices is not None:
        index = {repr(c): i for i, c in enumerate(choices)}
        return [float(index.get(repr(v), -1)) for v in values], [str(c) for c in choices]
    return [float(v) for v in values], None


def plot_params(sd: StudyData) -> Figure:
    """Each hyperparameter against the objective: complete trials coloured by trial number
    (where the search went, and when), the best starred, failures on the strip below."""
    names = list(sd.space.names)
    fig, axes = _grid(len(names), sharey=True, layout="constrained")
    done, failed = sd.complete, sd.failed
    best = sd.best()
    numbers = [t.number for t in sd.trials] or [0]
    norm = matplotlib.colors.Normalize(min(numbers), max(max(numbers), min(numbers) + 1))
    values = [t.value for t in done]
    sc = None
    for i, (ax, name) in enumerate(zip(axes, names)):
        var = sd.space[name]
        here = [t for t in done if name in t.params]  # a conditional variable: the trials where it was active
        xs, labels = _positions(var, [t.params[name] for t in here])
        if labels is not None:  # spread the points of one category a little, the same way every time
            xs = [x + 0.18 * (((t.number * 0.618034) % 1.0) - 0.5) for x, t in zip(xs, here)]
        sc = ax.scatter(xs, [t.value for t in here], c=[t.number for t in here], cmap="plasma", norm=norm, s=26,
                        alpha=0.85, edgecolor="none", gid="complete", zorder=3)
        if best is not None and name in best.params:
            bx, _ = _positions(var, [best.params.get(name)])
            ax.scatter(bx, [best.value], marker="*", s=220, color=C_STAR, edgecolor="k", lw=0.8, gid="best",
                       label=f"best: trial {best.number}", zorder=5)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            lo, hi = getattr(var, "low", None), getattr(var, "high", None)
            if getattr(var, "log", False):
                ax.set_xscale("log")
                _log_ticks(ax.xaxis, float(lo), float(hi))
            if lo is not None and hi is not None and hi > lo:  # the whole search box, not just the points
                pad = (hi / lo) ** 0.03 if getattr(var, "log", False) and lo > 0 else None
                ax.set_xlim(*(lo / pad, hi * pad) if pad else (lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)))
            if isinstance(var, Int) and not var.log:
                _int_ticks(ax)
        ax.set_xlabel(name + (" (log scale)" if getattr(var, "log", False) else ""))
        if i % axes_per_row(len(names)) == 0:
            ax.set_ylabel(sd.metric)
    axes[0].margins(y=0.1)  # room for the best trial's star at the top (or bottom)
    _y_axis(axes[0], values)  # shared by every panel
    for ax, name in zip(axes, names):
        fx, _ = _positions(sd.space[name], [t.params.get(name) for t in failed if name in t.params])
        _fail_strip(ax, fx, f"failed ({len(failed)})" if failed else None)
    if axes[0].get_legend_handles_labels()[0]:  # nothing to name with several objectives and no failure
        axes[0].legend(loc="best", framealpha=0.85)
    if sc is not None and done:
        fig.colorbar(sc, ax=axes, label="trial number", shrink=0.9, pad=0.01)
    fig.suptitle(f"{sd.name}: {sd.metric} ({_better(sd)}) against each hyperparameter", fontsize=12)
    return fig


def axes_per_row(n: int, ncols: int = 3) -> int:
    return max(1, min(ncols, n))


# ---------------------------------------------------------------------- importance
MIN_TRIALS_FOR_IMPORTANCE = 5


def importances(sd: StudyData) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances on the study's complete trials: fANOVA (a random
    forest's functional ANOVA), or PED-ANOVA when fANOVA fails. (importances, method or
    the reason there are none)."""
    if sd.importance is None:
        return None, "no Optuna study"
    if len(sd.complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials (has {len(sd.complete)})"
    if len(sd.space.names) < 2:
        return None, "one hyperparameter: nothing to compare"
    errors = []
    for label in ("fANOVA", "PED-ANOVA"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return sd.importance(label), label
        except Exception as e:  # too few distinct values, a library limit
            errors.append(f"{label}: {type(e).__name__}: {e}")
    return None, "; ".join(errors)


def plot_importance(sd: StudyData) -> tuple[Figure | None, str]:
    """A bar per hyperparameter: its share of the objective's variance. (figure, note)."""
    imp, how = importances(sd)
    if imp is None:
        return None, how
    names = sorted(imp, key=imp.get)  # largest at the top
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.3))
    bars = ax.barh(names, [imp[n] for n in names], color=C_TRIAL, gid="importance")
    for b, n in zip(bars, names):
        ax.text(b.get_width() + 0.01, b.get_y() + b.get_height() / 2, f"{imp[n]:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(imp.values()) + 0.1) if max(imp.values()) > 0.9 else max(imp.values()) + 0.12)
    ax.set_xlabel(f"importance for {sd.metric} ({how}, sums to 1)")
    ax.grid(axis="y", visible=False)
    ax.set_title(f"{sd.name}: hyperparameter importance, {how} on {len(sd.complete)} complete trials")
    fig.tight_layout()
    return fig, how


# ---------------------------------------------------------------------- parallel coordinates
#: where a trial in which a conditional variable was inactive crosses that variable's axis
INACTIVE_AT = -0.12


def _unit(var, values) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values of a variable -> [0, 1] over its search range, and (position, label) ticks;
    None (the variable was inactive) -> just below the axis, ticked "inactive"."""
    choices = getattr(var, "choices", None)
    if choices is not None:
        k = max(len(choices) - 1, 1)
        index = {repr(c): i for i, c in enumerate(choices)}
        pos = np.array([INACTIVE_AT if v is None else index.get(repr(v), 0) / k for v in values])
        ticks = [(i / k, str(c)) for i, c in enumerate(choices)]
    else:
        lo, hi, log = float(var.low), float(var.high), bool(getattr(var, "log", False))
        f = (lambda v: math.log10(v)) if log and lo > 0 else (lambda v: v)
        a, b = f(lo), f(hi)
        span = (b - a) or 1.0
        pos = np.array([INACTIVE_AT if v is None else (f(float(v)) - a) / span for v in values])
        ticks = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]
    if any(v is None for v in values):
        ticks.append((INACTIVE_AT, "inactive"))
    return pos, ticks


def plot_parallel(sd: StudyData) -> Figure | None:
    """Parallel coordinates: one vertical axis per hyperparameter (over its search range, log
    where the variable is) and one for the objective; a line per complete trial, coloured by
    its value, the best in bold."""
    done = sd.complete
    if len(done) < 2:
        return None
    names = list(sd.space.names)
    m = len(names) + 1
    fig, ax = plt.subplots(figsize=(max(7.0, 1.7 * m + 1.5), 4.6))
    cols = [_unit(sd.space[n], [t.params.get(n) for t in done]) for n in names]
    vals = np.array([t.value for t in done])
    log = spans_decades(vals)
    v = np.log10(vals) if log else vals
    vlo, vhi = float(v.min()), float(v.max())
    vpos = (v - vlo) / ((vhi - vlo) or 1.0)
    cols.append((vpos, [(0.0, f"{vals.min():.4g}"), (1.0, f"{vals.max():.4g}")]))
    cmap = plt.get_cmap("viridis" if sd.maximize else "viridis_r")
    norm = matplotlib.colors.Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1e-12)
    best = sd.best()
    order = sorted(range(len(done)), key=lambda i: vals[i] if sd.maximize else -vals[i])  # best drawn last
    for i in order:
        ys = [c[0][i] for c in cols]
        if done[i] is best:
            ax.plot(range(m), ys, color=C_BEST, lw=3.0, zorder=5, gid="best")
        else:
            ax.plot(range(m), ys, color=cmap(norm(vals[i])), lw=1.2, alpha=0.75, gid="trial", zorder=3)
    for j, (_, ticks) in enumerate(cols):
        ax.axvline(j, color="k", lw=0.8, zorder=1)
        for y, text in ticks:
            ax.text(j + 0.04, y, text, fontsize=7.5, va="center", ha="left", color="#333",
                    bbox=dict(fc="white", ec="none", alpha=0.7, pad=0.5), zorder=6)
    labels = [n + (" (log)" if getattr(sd.space[n], "log", False) else "") for n in names]
    labels.append(sd.metric + (" (log)" if log else ""))
    ax.set_xticks(range(m), labels, rotation=0)
    ax.set_yticks([])
    ax.set_xlim(-0.2, m - 0.6)
    ax.set_ylim(INACTIVE_AT - 0.06 if any(t[0] == INACTIVE_AT for _, tk in cols for t in tk) else -0.06, 1.06)
    ax.grid(False)
    for s in ("left", "bottom"):
        ax.spines[s].set_visible(False)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=sd.metric, pad=0.02)
    nf = len(sd.failed)
    fig.suptitle(f"{sd.name}: parallel coordinates of {len(done)} complete trials"
                 + (f" ({nf} failed, not drawn)" if nf else ""), fontsize=12)
    ax.set_title((f"bold red: the best, trial {best.number} ({sd.metric} {best.value:.4g}); " if best else "")
                 + f"colour: {sd.metric}", fontsize=9, color="#333")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- several studies
def plot_comparison(studies: list[StudyData]) -> Figure:
    """Several studies on the same axes: the best so far against the trial number and
    against the compute spent (GPU- or CPU-hours)."""
    fig, (a_n, a_c) = plt.subplots(1, 2, figsize=(12.5, 4.5), sharey=True)
    gpu = any(sd.accelerator == "GPU" for sd in studies)
    spent = max((sd.compute_hours() * 3600 for sd in studies), default=0.0)
    div, unit = time_unit(spent)
    unit = {"s": "seconds", "min": "minutes", "h": "hours"}[unit]
    all_best = []
    for k, sd in enumerate(studies):
        color = f"C{k % 10}"
        for ax, by in ((a_n, "number"), (a_c, "compute")):
            xs, ys = sd.best_so_far(by)
            if not xs:
                continue
            xs = [x / div for x in xs] if by == "compute" else xs
            ax.step(xs, ys, where="post", color=color, lw=2, gid="best_so_far",
                    label=f"{sd.label}: {ys[-1]:.4g}, {len(sd.complete)} complete"
                    + (f", {len(sd.failed)} failed" if sd.failed else ""))
            ax.plot([xs[-1]], [ys[-1]], "o", color=color, ms=5, zorder=5)
            all_best += ys
    base = next((sd.base_score for sd in studies if sd.base_score is not None), None)
    for ax in (a_n, a_c):
        _base_line(ax, base)
        _y_axis(ax, all_best + ([base] if base is not None else []))
    metrics = sorted({sd.metric for sd in studies})
    first = studies[0]
    a_n.set_ylabel(f"best {first.metric} so far ({_better(first)})" if len(metrics) == 1
                   else f"best value so far ({', '.join(metrics)})")
    a_n.set_xlabel("trial number")
    _int_ticks(a_n)
    a_c.set_xlabel(f"compute spent ({'GPU' if gpu else 'CPU'}-{unit}, trials' own time summed)")
    a_n.legend(loc="best", framealpha=0.85)
    fig.suptitle("Studies compared: best so far", fontsize=12)
    fig.tight_layout()
    return fig
