"""Optimisers x multi-objective problems x seeds: hypervolume regret, the multi-objective
counterpart of ``bench`` (``benchmarks/multiobjective.py`` runs it).

Problems with known fronts, all minimised on [0, 1]^d: BraninCurrin (Belakaria et al. 2019),
ZDT1, ZDT2, ZDT3 (Zitzler, Deb & Thiele 2000; d = 6), DTLZ2 (Deb et al. 2002; three
objectives, d = 6) and a constrained one, BoTorch's ConstrainedBraninCurrin (BraninCurrin
with a disk constraint on Branin's domain, Daulton et al. 2021).

The protocol, as ``bench``'s but for sets:

- every seed s is a different problem: each coordinate is folded at a random point c_i of
  [0.1, 0.9] (``u -> |u - c_i| / max(c_i, 1 - c_i)``) and the axes are permuted. The fold maps
  the box onto the box, so the objective vectors that can be reached, and so the Pareto
  front and its hypervolume, are those of the original problem, while the Pareto set leaves
  the box's edges and centre where these problems put it (ZDT's at x_2.. = 0, DTLZ2's at
  0.5): no optimiser meets it by construction. (``bench``'s shift would move part of the
  Pareto set out of the box, and with it the front);
- each run is a plain ask/tell loop of one point at a time in its own process with one torch
  thread, the objectives (and constraint values) of every evaluation kept, so the regret at
  budgets 25, 50, 100 comes from one run;
- hypervolume regret: the reference front's hypervolume minus that of the feasible points
  found, both with the objectives normalised by the true front's ideal (0) and nadir (1)
  points and against the fixed reference point (1.1, ..., 1.1); 0 is the whole front;
- summary per problem and budget: median and mean regret, a 95% bootstrap CI of the median,
  the mean rank among the optimisers on each seed, a one-sided paired Wilcoxon test against
  random search, and one of bo against each other optimiser (``bench``'s helpers).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from llmhpo._format import fmt
from llmhpo.lab.bench import Spec, _ranks, better_than, bootstrap_ci, run_jobs
from llmhpo.pareto import hypervolume

BUDGETS = (25, 50, 100)
REF = 1.1  # the reference point, in normalised objectives


# ---------------------------------------------------------------------- problems
def _branin_currin(X):
    x0, x1 = 15 * X[:, 0] - 5, 15 * X[:, 1]
    b = ((x1 - 5.1 / (4 * math.pi ** 2) * x0 ** 2 + 5 / math.pi * x0 - 6) ** 2
         + 10 * (1 - 1 / (8 * math.pi)) * np.cos(x0) + 10)
    u, v = X[:, 0], X[:, 1]
    with np.errstate(divide="ignore"):
        factor = np.where(v <= 0, 1.0, 1 - np.exp(-1 / (2 * np.where(v <= 0, 1.0, v))))
    c = factor * (2300 * u ** 3 + 1900 * u ** 2 + 2092 * u + 60) / (100 * u ** 3 + 500 * u ** 2 + 4 * u + 20)
    return np.column_stack([b, c])


def _disk(X):
    """ConstrainedBraninCurrin's constraint on Branin's domain: <= 0 inside the disk."""
    return ((15 * X[:, 0] - 5 - 2.5) ** 2 + (15 * X[:, 1] - 7.5) ** 2 - 50)[:, None]


def _zdt(kind: int):
    def f(X):
        f1 = X[:, 0]
        g = 1 + 9 * X[:, 1:].sum(axis=1) / (X.shape[1] - 1)
        h = {1: 1 - np.sqrt(f1 / g), 2: 1 - (f1 / g) ** 2,
             3: 1 - np.sqrt(f1 / g) - f1 / g * np.sin(10 * math.pi * f1)}[kind]
        return np.column_stack([f1, g * h])
    return f


def _dtlz2(X):
    g = ((X[:, 2:] - 0.5) ** 2).sum(axis=1)
    a, b = X[:, 0] * math.pi / 2, X[:, 1] * math.pi / 2
    return (1 + g)[:, None] * np.column_stack([np.cos(a) * np.cos(b), np.cos(a) * np.sin(b), np.sin(a)])


def _grid(n: int, d: int, fixed: float = 0.0) -> np.ndarray:
    """An n x n grid of the first two coordinates (the rest at ``fixed``): (n^2, d)."""
    a, b = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    X = np.full((n * n, d), fixed)
    X[:, 0], X[:, 1] = a.ravel(), b.ravel()
    return X


def _line(n: int, d: int) -> np.ndarray:
    X = np.zeros((n, d))
    X[:, 0] = np.linspace(0, 1, n)
    return X


@dataclass(frozen=True)
class Problem:
    """f: (n, d) points of [0, 1]^d -> (n, m) objectives (minimised); g: (n, d) -> (n, k)
    constraint values (<= 0 where one holds) or None; pareto_points: () -> (N, d) points
    whose feasible non-dominated images sample the true front densely."""

    name: str
    dim: int
    m: int
    f: Callable[[np.ndarray], np.ndarray]
    pareto_points: Callable[[], np.ndarray]
    g: Callable[[np.ndarray], np.ndarray] | None = None


PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    Problem("branin_currin", 2, 2, _branin_currin, lambda: _grid(2000, 2)),
    Problem("zdt1", 6, 2, _zdt(1), lambda: _line(200_001, 6)),
    Problem("zdt2", 6, 2, _zdt(2), lambda: _line(200_001, 6)),
    Problem("zdt3", 6, 2, _zdt(3), lambda: _line(200_001, 6)),
    Problem("dtlz2", 6, 3, _dtlz2, lambda: _grid(60, 6, fixed=0.5)),
    Problem("c_branin_currin", 2, 2, _branin_currin, lambda: _grid(2000, 2), _disk),
]}


def _front_2d(Y: np.ndarray, index: bool = False) -> np.ndarray:
    """The non-dominated rows of a large (n, 2) set by a sort (n log n), by the first
    objective; ``index``: their row numbers instead."""
    order = np.lexsort((Y[:, 1], Y[:, 0]))
    y1 = Y[order, 1]
    keep = order[y1 < np.minimum.accumulate(np.concatenate([[np.inf], y1[:-1]]))]
    return keep if index else Y[keep]


#: the true fronts' hypervolumes in closed form (normalised objectives, reference 1.1 each):
#: the square or cube minus the part the front leaves undominated
_ANALYTIC = {"zdt1": REF ** 2 - 1 / 3, "zdt2": REF ** 2 - 2 / 3, "dtlz2": REF ** 3 - math.pi / 6}


@functools.lru_cache(maxsize=None)
def true_front(name: str) -> np.ndarray:
    """A dense sample of a two-objective problem's true front, (N, 2) by the first objective:
    the non-dominated feasible images of ``pareto_points``; for the grid-sampled ones
    (BraninCurrin) refined three times around the front's points (steps 2e-3, 2e-4, 2e-5)."""
    p = PROBLEMS[name]
    X = p.pareto_points()
    for scale in (2e-3, 2e-4, 2e-5) if p.dim == 2 else ():
        ok = X if p.g is None else X[np.all(p.g(X) <= 0, axis=1)]
        X = ok[_front_2d(p.f(ok), index=True)]
        near = X[None] + scale * np.random.default_rng(0).standard_normal((40, *X.shape))
        X = np.vstack([X, np.clip(near.reshape(-1, p.dim), 0, 1)])
    if p.g is not None:
        X = X[np.all(p.g(X) <= 0, axis=1)]
    return _front_2d(p.f(X))


@functools.lru_cache(maxsize=None)
def reference(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(ideal (m,), nadir (m,), the true front's hypervolume in normalised objectives against
    (1.1, ..., 1.1)): in closed form for ZDT1, ZDT2 and DTLZ2 (ideal 0, nadir 1), else from
    ``true_front`` (a 2-D sweep: exact up to the sample's spacing)."""
    m = PROBLEMS[name].m
    if name in _ANALYTIC:
        return np.zeros(m), np.ones(m), _ANALYTIC[name]
    front = true_front(name)
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    return ideal, nadir, _hv_2d((front - ideal) / (nadir - ideal), REF)


def _hv_2d(front: np.ndarray, ref: float) -> float:
    """Hypervolume of a 2-D front (non-dominated, sorted by the first objective, as
    ``_front_2d`` gives it) against (ref, ref): ``pareto.hypervolume``'s sweep, without its
    quadratic dominance check, for fronts of 10^5 points."""
    front = front[np.all(front < ref, axis=1)]
    widths = np.diff(np.append(front[:, 0], ref))
    return float(np.sum(widths * (ref - front[:, 1])))


def folded(name: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Seed ``seed``'s version of the problem's input: u (n, d) -> the original problem's
    points (n, d), each coordinate folded at a random point and the axes permuted (module
    docstring). The box maps onto the box: the front stays the same."""
    d = PROBLEMS[name].dim
    rng = np.random.default_rng([zlib.crc32(name.encode()), int(seed)])
    c, perm = rng.uniform(0.1, 0.9, d), rng.permutation(d)
    return lambda U: np.abs(np.asarray(U, dtype=float).reshape(-1, d)[:, perm] - c) / np.maximum(c, 1 - c)


# ---------------------------------------------------------------------- runs
@dataclass
class MORun:
    """One run's whole history: values (n, m) objectives of each evaluation in tell order,
    constraints (n, k) or None, wall: seconds since the start when each was told."""

    problem: str
    optimizer: str
    seed: int
    values: list[list[float]]
    constraints: list[list[float]] | None
    wall: list[float]
    options: dict[str, Any] = field(default_factory=dict)

    def regret(self, budget: int | None = None) -> float:
        """Hypervolume regret of the feasible points among the first ``budget`` (normalised)."""
        ideal, nadir, hv_ref = reference(self.problem)
        Y = np.asarray(self.values[:budget], dtype=float)
        if self.constraints is not None:
            Y = Y[np.all(np.asarray(self.constraints[:budget]) <= 0, axis=1)]
        found = hypervolume((Y - ideal) / (nadir - ideal), [REF] * len(ideal)) if len(Y) else 0.0
        return max(hv_ref - found, 0.0)

    def seconds(self, budget: int | None = None) -> float:
        return self.wall[min(budget or len(self.wall), len(self.wall)) - 1] if self.wall else 0.0


def run_one(problem: str, spec: Spec, budget: int, seed: int) -> MORun:
    """``spec`` on ``problem`` folded by ``seed``, one point at a time, ``budget`` evaluations."""
    import torch

    from llmhpo.optimizers import make_optimizer

    torch.set_num_threads(1)
    p, fold = PROBLEMS[problem], folded(problem, seed)
    opt = make_optimizer(spec.optimizer, p.dim, np.random.default_rng(seed), budget, spec.options, n_objectives=p.m)
    values, cons, wall = [], [] if p.g is not None else None, []
    t0 = time.perf_counter()
    while len(values) < budget:
        (c,) = opt.ask(1)
        X = fold(c.x)
        y = p.f(X)[0].tolist()
        g = None if p.g is None else p.g(X)[0].tolist()
        opt.tell(c, y, g)
        values.append(y)
        if cons is not None:
            cons.append(g)
        wall.append(time.perf_counter() - t0)
    return MORun(problem, spec.label, seed, values, cons, wall, dict(spec.options))


#: the slowest first, so that parallel workers end together
_SLOW = ("bo", "optuna_gp")


def run_mobench(specs: list[Spec], problems: list[str], budget: int, seeds: int, workers: int = 1,
                on_row: Callable[[MORun], None] | None = None,
                skip: frozenset[tuple[str, str, int]] = frozenset()) -> list[MORun]:
    """Every (problem, optimiser, seed) run but those in ``skip`` (problem, label, seed): done before."""
    jobs = [(pr, sp, budget, s) for pr in problems for sp in specs for s in range(seeds)
            if (pr, sp.label, s) not in skip]
    jobs.sort(key=lambda j: j[1].optimizer not in _SLOW)
    return run_jobs(run_one, jobs, workers, on_row)


# ---------------------------------------------------------------------- summary
def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[bool, float, int]:
    common = sorted(set(a) & set(b))
    better, p = better_than([a[s] for s in common], [b[s] for s in common])
    return better, p, len(common)


def summarise(rows: list[MORun], budget: int, reference_opt: str = "random", ours: str = "bo") -> list[dict[str, Any]]:
    """Per problem x optimiser, hypervolume regret after ``budget`` evaluations: median, 95%
    CI of the median, mean, mean rank over seeds, paired one-sided Wilcoxon tests (this
    optimiser below random; ``ours`` below this one), seconds per run."""
    reg: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        reg.setdefault((r.problem, r.optimizer), {})[r.seed] = r.regret(budget)
    ranks: dict[tuple[str, str], list[float]] = {}
    for pr in sorted({r.problem for r in rows}):
        opts = sorted({o for q, o in reg if q == pr})
        for s in sorted(set.intersection(*(set(reg[(pr, o)]) for o in opts))):
            for o, k in zip(opts, _ranks(np.array([reg[(pr, o)][s] for o in opts]))):
                ranks.setdefault((pr, o), []).append(float(k))
    out = []
    for (pr, o), by_seed in reg.items():
        x = [by_seed[s] for s in sorted(by_seed)]
        lo, hi = bootstrap_ci(x)
        row = {"problem": pr, "optimizer": o, "budget": budget, "seeds": len(x), "median_regret": statistics.median(x),
               "mean_regret": statistics.mean(x), "ci_low": lo, "ci_high": hi,
               "mean_rank": statistics.mean(ranks.get((pr, o), [math.nan])),
               "mean_seconds": statistics.mean(r.seconds(budget) for r in rows if r.problem == pr and r.optimizer == o)}
        for key, a, b in (("vs_random", o, reference_opt), ("ours_better", ours, o)):
            if o not in (reference_opt if key == "vs_random" else ours) and (pr, a) in reg and (pr, b) in reg:
                row[key], row[f"p_{key}"], row[f"{key}_seeds"] = _paired(reg[(pr, a)], reg[(pr, b)])
            else:
                row[key], row[f"p_{key}"], row[f"{key}_seeds"] = None, math.nan, 0
        out.append(row)
    out.sort(key=lambda r: (r["problem"], r["mean_rank"]))
    return out


def markdown_table(summary: list[dict[str, Any]], ours: str = "bo") -> str:
    """One row per problem x optimiser; "beats random" and "bo better" from the paired tests."""
    def cell(ok, p):
        return "-" if ok is None else f"{'yes' if ok else 'no'} (p={p:.3f})"

    lines = [f"| problem | optimizer | median HV regret | 95% CI of the median | mean | mean rank | beats random | "
             f"{ours} better | s / run |", "|---|---|---:|---|---:|---:|:---:|:---:|---:|"]
    for s in summary:
        lines.append(f"| {s['problem']} | {s['optimizer']} | {fmt(s['median_regret'], 3)} | "
                     f"[{fmt(s['ci_low'], 3)}, {fmt(s['ci_high'], 3)}] | {fmt(s['mean_regret'], 3)} | "
                     f"{s['mean_rank']:.2f} | {cell(s['vs_random'], s['p_vs_random'])} | "
                     f"{cell(s['ours_better'], s['p_ours_better'])} | {s['mean_seconds']:.1f} |")
    return "\n".join(lines)


def wins(summary: list[dict[str, Any]], ours: str = "bo", against: tuple[str, ...] = ()) -> dict[str, Any]:
    """The problems where ``ours``' median regret is below every one of ``against``'s."""
    out = []
    for pr in sorted({s["problem"] for s in summary}):
        med = {s["optimizer"]: s["median_regret"] for s in summary if s["problem"] == pr}
        if ours in med and all(med[ours] < med[o] for o in against if o in med):
            out.append(pr)
    return {"problems": out, "of": len({s["problem"] for s in summary})}


def runs_to_json(rows: list[MORun]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
