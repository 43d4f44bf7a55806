"""The report's curves figure: each trial's per-step curves (the training loss) and, with
multi-fidelity, each configuration's score at each rung."""

from __future__ import annotations

import math

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from llmhpo.report._data import StudyData, spans_decades
from llmhpo.report._plots import (C_BEST, C_FAIL, C_PRUNED, _base_line, _grid, _int_ticks, _log_ticks,
                                  _y_axis)

_CURVE_NAMES = {"train_loss": "training loss", "val_loss": "validation loss", "eval_loss": "validation loss"}


def plot_curves(sd: StudyData) -> Figure | None:
    """Per-step curves (the training loss) of every trial, coloured by the trial's value, the
    best one highlighted, failed ones dashed; and with multi-fidelity, each trial's score at
    each rung."""
    names = sorted({k for t in sd.trials for k in t.curves})
    panels: list[tuple[str, str]] = [(n, "curve") for n in names]
    if any(t.rungs for t in sd.trials):
        panels.append((sd.metric, "rungs"))
    if not panels:
        return None
    fig, axes = _grid(len(panels), width=6.0, height=3.8, ncols=2)
    cmap = matplotlib.colormaps["viridis" if sd.maximize else "viridis_r"]
    for ax, (name, what) in zip(axes, panels):
        if what == "rungs":
            norm, label = _draw_rungs(ax, sd, cmap), f"{sd.metric} of a complete trial"
        else:
            norm, label = _draw_curves(ax, sd, name, cmap), sd.metric
        ax.legend(loc="best", framealpha=0.85)
        if norm is not None:
            bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label, pad=0.01)
            if isinstance(norm, matplotlib.colors.LogNorm):
                _log_ticks(bar.ax.yaxis, norm.vmin, norm.vmax)
    fig.suptitle(f"{sd.name}: curves of the trials", fontsize=12)
    fig.tight_layout()
    return fig


def _norm(values: list[float]) -> matplotlib.colors.Normalize:
    lo, hi = min(values), max(values)
    return matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-12)


def _draw_curves(ax, sd: StudyData, name: str, cmap) -> matplotlib.colors.Normalize | None:
    """The curve ``name`` of every trial, coloured by the trial's value (the colour scale
    spans the complete trials' values); the best drawn last, in bold."""
    best = sd.best()
    done = [t.value for t in sd.complete]
    norm = _norm(done) if done else None
    ys_all = []
    for t in sd.trials:
        pts = t.curves.get(name)
        if not pts or t.state in ("RUNNING", "INTERRUPTED"):
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ys_all += ys
        if t is best:
            continue  # drawn last, on top
        if t.state == "FAIL":
            ax.plot(xs, ys, ls="--", lw=1.0, color=C_FAIL, alpha=0.8, gid="failed", zorder=2)
        elif t.state == "COMPLETE":
            ax.plot(xs, ys, lw=1.0, color=cmap(norm(t.value)), alpha=0.8, gid="trial", zorder=2)
        else:
            ax.plot(xs, ys, lw=0.9, color=C_PRUNED, alpha=0.8, gid="pruned", zorder=1)
    pts = best.curves.get(name) if best is not None else None
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=2.6, color=C_BEST, gid="best", zorder=4,
                label=f"best trial {best.number} ({sd.metric} {best.value:.4g})")
    ax.plot([], [], lw=1.0, color=cmap(0.5), label="complete trial (colour: its value)")
    if any(t.state == "FAIL" and t.curves.get(name) for t in sd.trials):
        ax.plot([], [], ls="--", color=C_FAIL, label="failed trial")
    if any(t.state in ("PRUNED", "WAITING") and t.curves.get(name) for t in sd.trials):
        ax.plot([], [], color=C_PRUNED, label="pruned / waiting trial")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_CURVE_NAMES.get(name, name))
    ax.set_title(f"{_CURVE_NAMES.get(name, name)} of each trial")
    _y_axis(ax, ys_all)
    _int_ticks(ax)
    return norm


def _spread(i: int) -> float:
    """The i-th of a sequence of offsets in [-0.5, 0.5) that fills the interval evenly at any
    length (van der Corput): neighbours in the sequence land far apart."""
    out, f = 0.0, 0.5
    while i:
        out, i, f = out + f * (i & 1), i >> 1, f / 2
    return out - 0.5


def _draw_rungs(ax, sd: StudyData, cmap) -> matplotlib.colors.Normalize | None:
    """Each configuration's score at each rung it reached. Scores often tie (an accuracy on
    a few hundred questions), so every configuration has a marker at each rung and a small
    sideways offset of its own on the (geometric) resource axis, the best drawn last and
    thin on top; the colour scale spans the scores drawn, so a colour reads as on the y axis."""
    best = sd.best()
    drawn = [t for t in sd.trials if t.rungs and t.state not in ("RUNNING", "INTERRUPTED")]
    if not drawn:
        return None
    rungs = sorted({x for t in drawn for x in t.rungs})
    ys_all = [y for t in drawn for y in t.rungs.values()]
    norm = _norm(ys_all)
    if spans_decades(ys_all):  # the y axis is then logarithmic (_y_axis): so is the colour scale
        norm = matplotlib.colors.LogNorm(norm.vmin, norm.vmax)
    # offsets within a fifth of the narrowest gap between rungs either side, as a factor on a log axis
    gap = min((math.log(b / a) for a, b in zip(rungs, rungs[1:]) if a > 0), default=math.log(3))
    others = [t for t in drawn if t is not best]
    for i, t in enumerate(others + ([best] if best in drawn else [])):
        pts = sorted(t.rungs.items())
        shift = 1.0 if t is best else math.exp(0.4 * gap * _spread(i + 2))  # _spread(1) = 0 is the best's place
        xs, ys = [x * shift for x, _ in pts], [y for _, y in pts]
        if t is best:
            ax.plot(xs, ys, lw=1.4, color=C_BEST, marker="o", ms=5.5, mec="white", mew=0.8, gid="best", zorder=5,
                    label=f"best trial {best.number} ({sd.metric} {best.value:.4g})")
        elif t.state == "COMPLETE":
            ax.plot(xs, ys, lw=1.1, color=cmap(norm(t.value)), marker="o", ms=4, alpha=0.9, gid="trial", zorder=3)
        elif t.state == "FAIL":
            ax.plot(xs, ys, ls="--", lw=1.0, color=C_FAIL, marker="x", ms=4, alpha=0.8, gid="failed", zorder=2)
        else:
            ax.plot(xs, ys, lw=0.7, color=C_PRUNED, marker="o", ms=3, mfc="white", alpha=0.8, gid="pruned",
                    zorder=2)
    if any(t.state == "COMPLETE" and t is not best for t in drawn):
        ax.plot([], [], lw=1.1, marker="o", ms=4, color=cmap(0.5), label="complete trial (colour: its value)")
    if any(t.state == "FAIL" for t in drawn):
        ax.plot([], [], ls="--", marker="x", color=C_FAIL, label="failed trial")
    if any(t.state in ("PRUNED", "WAITING") for t in drawn):
        ax.plot([], [], lw=0.7, marker="o", ms=3, mfc="white", color=C_PRUNED, label="pruned / waiting trial")
    ax.set_xscale("log")
    ax.set_xticks(rungs, [f"{r:g}" for r in rungs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{sd.fidelity.resource if sd.fidelity is not None else 'resource'} (rung)")
    ax.set_ylabel(f"{sd.metric} at the rung")
    ax.set_title("score at each rung (multi-fidelity)")
    _base_line(ax, sd.base_score)
    _y_axis(ax, ys_all)
    return norm
