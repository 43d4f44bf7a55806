"""``llmhpo figures``: the algorithm gallery of the report's chapter 2, drawn by llmhpo's
own optimisers through their ask/tell on Himmelblau's function (figures 2.9-2.11) and on
f(x) = sin(x)^2 + sqrt(x + 5) for Bayesian optimisation (figure 2.12).

Each ``draw_*`` function runs the optimiser, reads its state (the partition tree's boxes,
the fractal decomposition's hyperspheres, the local search's centre) and returns the
figure, with the runs' points on ``fig.llmhpo`` so that what is drawn can be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from llmhpo.objectives.functions import get_function  # noqa: E402
from llmhpo.optimizers import make_optimizer  # noqa: E402

#: Himmelblau's four global minima (value 0)
MINIMA = np.array([[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]])
C_POINT, C_PATH, C_BOX = "#d7301f", "#1f3b73", "#333333"


@dataclass
class Run:
    """An optimiser's run: the points it evaluated, in order, and snapshots of its state."""

    name: str
    X: np.ndarray  # (n, d) native points
    y: np.ndarray  # (n,)
    infos: list[dict] = field(default_factory=list)
    states: list = field(default_factory=list)  # what ``watch`` read after each tell


def run_optimizer(name: str, budget: int, seed: int = 0, options: dict | None = None, fn: str = "himmelblau",
                  finish_batch: bool = False, watch=None) -> tuple[Run, object]:
    """Evaluate ``budget`` points that optimiser ``name`` asks for, one at a time (with
    ``finish_batch``, go on until its current batch is told, so that a partition's
    iteration is whole). ``watch(opt)`` is called after every tell. Returns (run, optimiser)."""
    f = get_function(fn)
    opt = make_optimizer(name, f.dim, np.random.default_rng(seed), budget, options)
    X, y, infos, states = [], [], [], []
    while len(y) < budget or (finish_batch and getattr(opt, "queue", None)):
        cands = opt.ask(1)
        if not cands:
            break
        c = cands[0]
        x = f.from_unit(c.x)
        v = f(x)
        opt.tell(c, v)
        X.append(x)
        y.append(v)
        infos.append(dict(c.info))
        if watch is not None:
            states.append(watch(opt))
    return Run(name, np.asarray(X).reshape(len(X), f.dim), np.asarray(y), infos, states), opt


# ---------------------------------------------------------------------- drawing helpers
def _contours(ax, fn: str = "himmelblau", minima: bool = True) -> None:
    f = get_function(fn)
    (x0, x1), (y0, y1) = f.bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 240), np.linspace(y0, y1, 240))
    z = np.vectorize(lambda a, b: f(np.array([a, b])))(gx, gy)
    levels = np.logspace(-0.5, math.log10(z.max()), 18)
    ax.contourf(gx, gy, z + 1e-3, levels=np.concatenate([[1e-3], levels]), norm=LogNorm(), cmap="Blues_r", alpha=0.55)
    ax.contour(gx, gy, z + 1e-3, levels=levels, norm=LogNorm(), colors="#3d5a80", linewidths=0.5, alpha=0.6)
    if minima:
        ax.plot(MINIMA[:, 0], MINIMA[:, 1], "*", color="gold", mec="k", mew=0.7, ms=13, gid="minima",
                label="global minima", zorder=6)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def _points(ax, run: Run, label: str, **kw) -> None:
    best = int(np.argmin(run.y))
    ax.scatter(run.X[:, 0], run.X[:, 1], s=kw.pop("s", 26), color=kw.pop("color", C_POINT), edgecolor="white",
               lw=0.6, zorder=4, gid="evaluated", label=label, **kw)
    ax.plot(run.X[best, 0], run.X[best, 1], "o", ms=11, mfc="none", mec="k", mew=1.6, zorder=5, gid="best",
            label=f"best: f = {run.y[best]:.3g}")


def _legend_below(ax) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)


def _unit_to_native(fn: str = "himmelblau"):
    f = get_function(fn)
    lo, hi = f.bounds[:, 0], f.bounds[:, 1]
    return lo, hi - lo


# ---------------------------------------------------------------------- figure 2.9
def draw_exploratory(seed: int = 0, budget: int = 25) -> plt.Figure:
    """Grid search against random search, 25 evaluations each (report figure 2.9)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 6.4), layout="constrained")
    runs = {}
    for ax, name, title in ((axes[0], "grid", "grid search (5 x 5)"), (axes[1], "random", "random search")):
        opts = {"levels": int(round(math.sqrt(budget)))} if name == "grid" else None
        run, _ = run_optimizer(name, budget, seed, opts)
        runs[name] = run
        _contours(ax)
        _points(ax, run, f"{len(run.y)} evaluations")
        ax.set_title(f"{title}: best f = {run.y.min():.3g}")
        _legend_below(ax)
    fig.suptitle("Exploratory methods on Himmelblau's function, 25 evaluations each", fontsize=12)
    fig.llmhpo = runs
    return fig


# ---------------------------------------------------------------------- figure 2.10
def draw_local_search(seed: int = 0, budget: int = 60) -> plt.Figure:
    """The paths of iterated local search (its centre, with kicks) and simulated annealing
    (its current point) over their evaluations (report figure 2.10)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 6.4), layout="constrained")
    lo, w = _unit_to_native()
    runs = {}
    for ax, name, title, attr in ((axes[0], "local_search", "iterated local search", "centre"),
                                  (axes[1], "annealing", "simulated annealing", "current")):
        run, _ = run_optimizer(name, budget, seed,
                               watch=lambda o, a=attr: None if getattr(o, a) is None else np.array(getattr(o, a)))
        runs[name] = run
        _contours(ax)
        ax.scatter(run.X[:, 0], run.X[:, 1], s=12, color="#777", alpha=0.7, zorder=3, gid="evaluated",
                   label=f"{len(run.y)} evaluations")
        path = []
        for s in run.states:  # the accepted moves: the centre (current point) each time it changes
            if s is not None and (not path or not np.allclose(path[-1], s)):
                path.append(s)
        P = lo + np.asarray(path) * w
        ax.plot(P[:, 0], P[:, 1], "-", color=C_PATH, lw=1.6, zorder=4, gid="path",
                label=f"{'centre' if attr == 'centre' else 'current point'}: {len(P)} moves")
        ax.plot(P[:, 0], P[:, 1], "o", color=C_PATH, ms=4, zorder=4)
        ax.plot(P[0, 0], P[0, 1], "s", color="#2a9d8f", ms=9, mec="k", zorder=5, label="start")
        kicks = [i for i, inf in enumerate(run.infos) if inf.get("role") == "kick"]
        if kicks:
            ax.scatter(run.X[kicks, 0], run.X[kicks, 1], marker="D", s=40, color="#f4a261", edgecolor="k", zorder=5,
                       gid="kick", label=f"kick (restart), {len(kicks)}")
        best = int(np.argmin(run.y))
        ax.plot(run.X[best, 0], run.X[best, 1], "o", ms=11, mfc="none", mec="k", mew=1.6, zorder=6, gid="best",
                label=f"best: f = {run.y[best]:.3g}")
        ax.set_title(f"{title}: {len(run.y)} evaluations")
        _legend_below(ax)
    fig.suptitle("Metaheuristics on Himmelblau's function: the paths they follow", fontsize=12)
    fig.llmhpo = runs
    return fig


# ---------------------------------------------------------------------- figure 2.11
def draw_partitions(seed: int = 0, budget: int = 45) -> plt.Figure:
    """SOO's and DIRECT's boxes and the fractal decomposition's hyperspheres after about
    ``budget`` evaluations (each run ends on a whole iteration; report figure 2.11)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 6.4), layout="constrained")
    lo, w = _unit_to_native()
    runs = {}

    # SOO: the leaves of its K-ary tree
    run, soo = run_optimizer("soo", budget, seed, {"K": 3}, finish_batch=True)
    runs["soo"] = run
    ax = axes[0]
    _contours(ax)
    leaves = [nd for nd in soo.nodes if not nd["expanded"]]
    depth_max = max(nd["depth"] for nd in leaves)
    for nd in leaves:
        a, b = lo + np.asarray(nd["lo"]) * w, lo + np.asarray(nd["hi"]) * w
        ax.add_patch(Rectangle(a, *(b - a), fill=False, ec=C_BOX, lw=0.8, zorder=3, gid="box"))
    _points(ax, run, f"{len(run.y)} evaluations (box centres)", s=16)
    ax.set_title(f"SOO (K = 3): {len(leaves)} boxes, depth {depth_max}")

    # DIRECT: its hyper-rectangles (the iteration's divisions are completed by the next ask)
    run, direct = run_optimizer("direct", budget, seed, finish_batch=True)
    direct.ask(1)  # finishes the last divisions; the point it returns is not evaluated
    runs["direct"] = run
    ax = axes[1]
    _contours(ax)
    for r in direct.rects:
        half = 0.5 * 3.0 ** -np.asarray(r["l"], dtype=float)
        a = lo + (np.asarray(r["c"]) - half) * w
        ax.add_patch(Rectangle(a, *(2 * half * w), fill=False, ec=C_BOX, lw=0.8, zorder=3, gid="box"))
    _points(ax, run, f"{len(run.y)} evaluations", s=16)
    ax.set_title(f"DIRECT: {len(direct.rects)} rectangles, {direct.iterations} iterations")

    # FDA: every hypersphere it decomposed or searched, collected as the search goes
    seen: dict[tuple, tuple[int, np.ndarray, float]] = {}

    def spheres(o):
        for k, level in enumerate(o.levels):
            for s in level:
                key = (k, *np.round(np.asarray(s["c"]), 9))
                seen.setdefault(key, (k, np.asarray(s["c"], dtype=float), float(s["r"])))
        return len(seen)

    run, _ = run_optimizer("fda", budget, seed, {"k_max": 3}, watch=spheres)
    runs["fda"] = run
    ax = axes[2]
    _contours(ax)
    colors = ["#264653", "#2a9d8f", "#e76f51", "#8338ec", "#f4a261"]
    for k, c, r in seen.values():  # the box is square: a sphere of [0,1]^2 is a circle here
        ax.add_patch(Circle(lo + c * w, r * w[0], fill=False, ec=colors[k % len(colors)], lw=1.0, alpha=0.85,
                            zorder=3, gid="sphere"))
    for k in sorted({k for k, _, _ in seen.values()}):
        ax.plot([], [], "o", mfc="none", mec=colors[k % len(colors)], label=f"depth {k + 1} hyperspheres")
    ils = [i for i, inf in enumerate(run.infos) if inf.get("phase") == "ils"]
    ax.scatter(run.X[:, 0], run.X[:, 1], s=12, color=C_POINT, edgecolor="white", lw=0.4, zorder=4, gid="evaluated",
               label=f"{len(run.y)} evaluations ({len(ils)} by the local search)")
    best = int(np.argmin(run.y))
    ax.plot(run.X[best, 0], run.X[best, 1], "o", ms=11, mfc="none", mec="k", mew=1.6, zorder=6, gid="best",
            label=f"best: f = {run.y[best]:.3g}")
    ax.set_title(f"fractal decomposition (k_max = 3): {len(seen)} hyperspheres")
    runs["fda"].states = list(seen.values())
    for ax in axes:
        _legend_below(ax)
    fig.suptitle("Partition-based optimisation on Himmelblau's function", fontsize=12)
    fig.llmhpo = runs
    return fig


# ---------------------------------------------------------------------- figure 2.12
def gp_example(x: np.ndarray) -> np.ndarray:
    """The report's 1-D example: sin(x)^2 + sqrt(x + 5), on [-5, 5]."""
    return np.sin(x) ** 2 + np.sqrt(x + 5)


def draw_bayesian(seed: int = 0, n: int = 6, n_init: int = 4) -> plt.Figure:
    """BO after ``n`` evaluations of the 1-D example: the GP's mean and uncertainty (its
    model, fitted as BO fits it) and the expected improvement that picks the next point."""
    import torch
    from botorch.acquisition import LogExpectedImprovement

    from llmhpo.optimizers._gp import dtype, fit_gp, posterior_mean_std

    lo, hi = -5.0, 5.0
    opt = make_optimizer("bo", 1, np.random.default_rng(seed), n + 1, {"n_init": n_init})
    for _ in range(n):
        c = opt.ask(1)[0]
        opt.tell(c, float(gp_example(lo + c.x[0] * (hi - lo))))
    U, y = opt._observed()  # the history BO's model sees: (n, 1) in [0, 1], values to minimise
    nxt = opt.ask(1)[0].x[0]  # what BO evaluates next
    model = fit_gp(U, -y)  # as BO fits it: maximise -f
    grid = np.linspace(0, 1, 400).reshape(-1, 1)
    mean, std = posterior_mean_std(model, grid)
    mean = -mean
    with torch.no_grad():
        ei = LogExpectedImprovement(model, best_f=float((-y).max()))(
            torch.as_tensor(grid, dtype=dtype()).unsqueeze(1)).exp().numpy()
    xs, X = lo + grid[:, 0] * (hi - lo), lo + U[:, 0] * (hi - lo)
    x_next = lo + nxt * (hi - lo)

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    a.plot(xs, gp_example(xs), "--", color="#555", lw=1.2, label="f(x) = sin(x)$^2$ + $\\sqrt{x+5}$", gid="truth")
    a.fill_between(xs, mean - 2 * std, mean + 2 * std, color="#9ecae1", alpha=0.5, label="GP mean $\\pm$ 2 std",
                   gid="band")
    a.plot(xs, mean, color="#08519c", lw=2, label="GP mean", gid="mean")
    a.plot(X, y, "o", color="k", ms=7, zorder=5, label=f"{len(y)} evaluations ({n_init} initial, LHS)", gid="observed")
    a.axvline(x_next, color="#e4572e", lw=1.4, ls=":", label=f"next point x = {x_next:.2f}")
    a.set_ylabel("f(x)")
    a.legend(loc="upper left", fontsize=8, framealpha=0.9)
    a.set_title(f"Bayesian optimisation (BoTorch GP, LogEI) after {len(y)} evaluations: minimise f")
    b.plot(xs, ei, color="#e4572e", lw=2, gid="acquisition", label="expected improvement")
    b.fill_between(xs, 0, ei, color="#e4572e", alpha=0.15)
    b.axvline(x_next, color="#e4572e", lw=1.4, ls=":")
    b.set_ylabel("acquisition (EI)")
    b.set_xlabel("x")
    b.set_xlim(lo, hi)
    b.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.llmhpo = {"X": X, "y": y, "x_next": x_next, "mean": mean, "std": std, "ei": ei, "grid": xs}
    return fig


GALLERY = {
    "gallery-exploratory.png": draw_exploratory,
    "gallery-local-search.png": draw_local_search,
    "gallery-partitions.png": draw_partitions,
    "gallery-bayesian.png": draw_bayesian,
}


def write_gallery(out: Path | str, seed: int = 0, dpi: int = 110) -> list[Path]:
    """Draw every gallery figure into ``out``; returns the PNG paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in GALLERY.items():
        fig = draw(seed=seed)
        try:
            fig.savefig(out / name, dpi=dpi, bbox_inches="tight", pad_inches=0.15)  # legends below the axes
        finally:
            plt.close(fig)
        paths.append(out / name)
    return paths


__all__ = ["GALLERY", "MINIMA", "Run", "draw_bayesian", "draw_exploratory", "draw_local_search", "draw_partitions",
           "gp_example", "run_optimizer", "write_gallery"]
