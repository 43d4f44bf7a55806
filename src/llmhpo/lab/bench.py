"""Optimisers x benchmark functions x seeds: the comparison tables of ``llmhpo bench``.

The protocol (single fidelity), chosen so that it cannot flatter an algorithm:

- every seed s is a different problem: the function's optimum is moved to a random point and,
  on a box with equal sides, its axes are permuted (``Function.shifted(s)``); every optimiser
  meets the same problem for seed s, and is itself seeded with s. Deterministic optimisers
  (SOO, DIRECT, ...) so get ten different runs, and none meets the optimum by construction;
- each run is a plain ask/tell loop (``ask(q)``, evaluate, ``tell``) in its own process, one
  torch thread; its whole history is kept (the value of every evaluation, the wall time when
  it was told, the ask time), so the regret at budgets 10, 25, 50, 100 comes from one run;
- summary per function and budget: median and mean best regret, a 95% bootstrap confidence
  interval of the median (2,000 resamples of the seeds), the mean rank among the optimisers
  on each seed (ties share their mean rank), and whether the optimiser beats random search on
  that function: a one-sided Wilcoxon signed-rank test on the seeds' paired regrets, p < 0.05
  (it needs at least 5 seeds to reach that: with fewer the table says n/a, and why).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhpo._format import fmt
from llmhpo.config import Budget, Config, RunnerConfig, StudyConfig
from llmhpo.objectives.functions import any_dimension, get_function


#: the budgets a summary reports, among those a run reaches
BUDGETS = (10, 25, 50, 100)


@dataclass
class Spec:
    """One optimiser configuration of a bench: its label in the tables, its name, its options."""

    label: str
    optimizer: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchRun:
    """One run's whole history. values: (budget,) the value of each evaluation in tell order
    (None: failed); ask_seconds: the ask time spent per evaluation (an ask's time shared by
    the points it returned); wall: seconds since the start when each value was told."""

    function: str
    optimizer: str
    seed: int
    batch: int
    f_min: float
    values: list[float | None]
    ask_seconds: list[float]
    wall: list[float]
    options: dict[str, Any] = field(default_factory=dict)

    def best_regret(self, budget: int | None = None) -> float:
        """Best value among the first ``budget`` evaluations minus the known minimum (inf: none)."""
        ok = [v for v in self.values[:budget] if v is not None]
        return max(min(ok) - self.f_min, 0.0) if ok else math.inf

    def regret_curve(self) -> np.ndarray:
        """(n,) best regret after each evaluation."""
        vals = np.array([math.inf if v is None else v for v in self.values], dtype=float)
        return np.maximum(np.minimum.accumulate(vals) - self.f_min, 0.0)

    @property
    def seconds(self) -> float:
        return self.wall[-1] if self.wall else 0.0


def run_one(function: str, spec: Spec, budget: int, seed: int, batch: int = 1, dim: int | None = None) -> BenchRun:
    """One run of the protocol: ``spec`` on ``function`` shifted by ``seed``, ``batch``
    points asked at a time, until ``budget`` evaluations (or the optimiser has no more)."""
    import torch

    from llmhpo.optimizers import make_optimizer

    torch.set_num_threads(1)
    f = get_function(function, dim if any_dimension(function) else None).shifted(seed)
    opt = make_optimizer(spec.optimizer, f.dim, np.random.default_rng(seed), budget, spec.options)
    values: list[float | None] = []
    asks: list[float] = []
    wall: list[float] = []
    t0 = time.perf_counter()
    while len(values) < budget:
        q = min(batch, budget - len(values))
        ta = time.perf_counter()
        cands = opt.ask(q)
        while cands and len(cands) < q:  # an algorithm may hand out a batch in parts
            more = opt.ask(q - len(cands))
            if not more:
                break
            cands += more
        dt = time.perf_counter() - ta
        if not cands:
            break  # the optimiser has nothing more to propose (a finished grid)
        for c in cands:
            y = f(f.from_unit(c.x))
            y = y if math.isfinite(y) else None
            opt.tell(c, y)
            values.append(y)
            asks.append(dt / len(cands))
            wall.append(time.perf_counter() - t0)
    return BenchRun(function, spec.label, seed, batch, f.f_min, values, asks, wall, dict(spec.options))


#: the optimisers whose runs take longest go first, so that parallel workers end together
_SLOW = ("bo", "optuna_gp", "bamsoo")


def run_bench(specs: list[Spec], functions: list[str], budget: int, seeds: int, workers: int = 1,
              dim: int | None = None, batch: int = 1,
              on_row: Callable[[BenchRun], None] | None = None) -> list[BenchRun]:
    jobs = [(f, sp, budget, s, batch, dim) for f in functions for sp in specs for s in range(seeds)]
    jobs.sort(key=lambda j: j[1].optimizer not in _SLOW)
    return run_jobs(run_one, jobs, workers, on_row)


def run_jobs(fn: Callable[..., Any], jobs: list[tuple], workers: int,
             on_row: Callable[[Any], None] | None = None) -> list[Any]:
    """``fn(*job)`` for every job, in this process or on ``workers`` spawned processes; each
    result goes to ``on_row`` as it comes. Returns the results in the order they finished."""
    rows: list[Any] = []
    if workers <= 1:
        for job in jobs:
            rows.append(fn(*job))
            if on_row:
                on_row(rows[-1])
        return rows
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for fut in cf.as_completed([pool.submit(fn, *job) for job in jobs]):
            rows.append(fut.result())
            if on_row:
                on_row(rows[-1])
    return rows


def bootstrap_ci(x: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of x."""
    a = np.asarray(x, dtype=float)
    if len(a) == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    meds = np.median(a[idx], axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def better_than(a: list[float], b: list[float], alpha: float = 0.05) -> tuple[bool, float]:
    """One-sided Wilcoxon signed-rank test on paired regrets (same seeds): a < b? (significant, p)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return False, 1.0
    p = float(wilcoxon(d, alternative="less", zero_method="zsplit").pvalue)
    return p < alpha, p


def min_paired_seeds(alpha: float = 0.05) -> int:
    """The fewest seeds with which ``better_than`` can reach p < alpha: with n pairs the
    one-sided signed-rank test's smallest p-value is 2^-n (every pair on one side)."""
    return math.floor(math.log2(1 / alpha)) + 1


def vs_random_cell(row: dict[str, Any]) -> str:
    """A summary row's "vs random" cell: "better", "" (not significantly), "-" for random
    itself, "n/a" where no paired test could say better (see ``vs_random_note``)."""
    if row["better_than_random"]:
        return "better"
    if row.get("paired_seeds") is None:
        return "-"
    return "" if row["paired_seeds"] >= min_paired_seeds() else "n/a"


def vs_random_note(summary: list[dict[str, Any]], reference: str = "random") -> str | None:
    """Why the "vs random" column says n/a, or None when every test could be made."""
    tested = [s for s in summary if s["optimizer"] != reference]
    if tested and not any(s["optimizer"] == reference for s in summary):
        return f"vs {reference}: no {reference} search ran; add {reference} to --optimizers for the paired test"
    few = sorted({s["paired_seeds"] for s in tested if s.get("paired_seeds", 0) < min_paired_seeds()})
    if not few:
        return None
    return (f"vs {reference}: needs at least {min_paired_seeds()} seeds for a paired test "
            f"(ran {', '.join(map(str, few))}); use --seeds {min_paired_seeds()} or more")


def _ranks(regrets: np.ndarray) -> np.ndarray:
    """1 = best; ties share their mean rank."""
    from scipy.stats import rankdata

    return rankdata(regrets, method="average")


def summarise(rows: list[BenchRun], budget: int | None = None, reference: str = "random") -> list[dict[str, Any]]:
    """Per function x optimiser, regret after ``budget`` evaluations (default: each run's
    whole history): median, 95% CI of the median, mean, mean rank over seeds, whether it
    is significantly better than ``reference`` (paired over seeds), seconds per run, ask time."""
    reg: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        reg.setdefault((r.function, r.optimizer), {})[r.seed] = r.best_regret(budget)
    ranks: dict[tuple[str, str], list[float]] = {}
    for fn in sorted({r.function for r in rows}):
        opts = sorted({o for f, o in reg if f == fn})
        seeds = sorted(set.intersection(*(set(reg[(fn, o)]) for o in opts)))
        for s in seeds:
            rk = _ranks(np.array([reg[(fn, o)][s] for o in opts]))
            for o, k in zip(opts, rk):
                ranks.setdefault((fn, o), []).append(float(k))
    out = []
    for (fn, o), by_seed in reg.items():
        seeds = sorted(by_seed)
        x = [by_seed[s] for s in seeds]
        runs = [r for r in rows if r.function == fn and r.optimizer == o]
        row = {"function": fn, "optimizer": o, "budget": budget, "seeds": len(x),
               "median_regret": statistics.median(x), "mean_regret": statistics.mean(x),
               "ci_low": bootstrap_ci(x)[0], "ci_high": bootstrap_ci(x)[1],
               "mean_rank": statistics.mean(ranks.get((fn, o), [math.nan])),
               "mean_seconds": statistics.mean(r.seconds if budget is None else r.wall[min(budget, len(r.wall)) - 1]
                                               for r in runs if r.wall),
               "median_ask_seconds": statistics.median(a for r in runs for a in r.ask_seconds[:budget])}
        ref = reg.get((fn, reference))
        if ref is not None and o != reference:
            common = [s for s in seeds if s in ref]
            row["better_than_random"], row["p_vs_random"] = better_than([by_seed[s] for s in common],
                                                                        [ref[s] for s in common])
            row["paired_seeds"] = len(common)
        else:  # paired_seeds: None for the reference itself, 0 where it did not run
            row["better_than_random"], row["p_vs_random"] = False, math.nan
            row["paired_seeds"] = None if o == reference else 0
        out.append(row)
    out.sort(key=lambda r: (r["function"], r["mean_rank"]))
    return out


def overall(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per optimiser over all functions: mean of its per-function mean ranks, the functions
    where it beats random significantly, mean seconds per run; best mean rank first."""
    out = []
    for o in sorted({s["optimizer"] for s in summary}):
        mine = [s for s in summary if s["optimizer"] == o]
        out.append({"optimizer": o, "mean_rank": statistics.mean(s["mean_rank"] for s in mine),
                    "functions": len(mine), "better_than_random": sum(bool(s["better_than_random"]) for s in mine),
                    "mean_seconds": statistics.mean(s["mean_seconds"] for s in mine)})
    out.sort(key=lambda r: r["mean_rank"])
    return out


def markdown_table(summary: list[dict[str, Any]]) -> str:
    lines = ["| function | optimizer | median regret | 95% CI of the median | mean regret | mean rank | "
             "beats random | s / run | ask (median) |",
             "|---|---|---:|---|---:|---:|:---:|---:|---:|"]
    for s in summary:
        star = {"better": "yes"}.get(vs_random_cell(s), vs_random_cell(s))
        lines.append(f"| {s['function']} | {s['optimizer']} | {fmt(s['median_regret'], 3)} | "
                     f"[{fmt(s['ci_low'], 3)}, {fmt(s['ci_high'], 3)}] | {fmt(s['mean_regret'], 3)} | "
                     f"{s['mean_rank']:.2f} | {star} | {s['mean_seconds']:.1f} | {1000 * s['median_ask_seconds']:.1f} ms |")
    note = vs_random_note(summary)
    return "\n".join(lines + ([f"\n{note}"] if note else []))


def overall_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| optimizer | mean rank over all functions | functions where it beats random | s / run |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['mean_rank']:.2f} | {r['better_than_random']} / {r['functions']} | "
                     f"{r['mean_seconds']:.1f} |")
    return "\n".join(lines)


def plot_convergence(rows: list[BenchRun], folder: Path) -> list[Path]:
    """One figure per function: best regret against evaluations, median and quartiles over
    the seeds, log y. Returns the files written (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fn in sorted({r.function for r in rows}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        labels = sorted({r.optimizer for r in rows if r.function == fn})
        cmap = plt.get_cmap("tab20")
        floor = 1e-8
        # one line style per family, so that 15 curves stay readable
        style = {"bo": "-", "bamsoo": "--", "soo": "--", "direct": "--", "fda": "--", "random": ":", "grid": ":",
                 "lhs": ":", "sobol": ":", "annealing": "-.", "genetic": "-.", "local_search": "-.",
                 "optuna_tpe": (0, (5, 1, 1, 1)), "optuna_cmaes": (0, (5, 1, 1, 1)), "optuna_gp": (0, (5, 1, 1, 1))}
        for k, o in enumerate(labels):
            curves = [r.regret_curve() for r in rows if r.function == fn and r.optimizer == o]
            n = min(len(c) for c in curves)
            C = np.maximum(np.array([c[:n] for c in curves]), floor)
            q1, med, q3 = np.quantile(C, [0.25, 0.5, 0.75], axis=0)
            x = np.arange(1, n + 1)
            ax.plot(x, med, label=o, color=cmap(k % 20), ls=style.get(o, "-"),
                    lw=2.0 if o in ("bo", "optuna_gp", "random") else 1.1)
            ax.fill_between(x, q1, q3, color=cmap(k % 20), alpha=0.12)
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best regret (median, quartiles)")
        ax.set_title(f"{fn}: {len({r.seed for r in rows if r.function == fn})} shifted seeds")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = folder / f"{fn}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def runs_to_json(rows: list[BenchRun]) -> list[dict[str, Any]]:
    return [dict(asdict(r), evaluations=len(r.values)) for r in rows]


# ---------------------------------------------------------------------------- multi-fidelity
#: how the multi-fidelity bench spends its resource: full fidelity, a scheduler with one of
#: our optimisers ("asha:random"; with a GP of every rung, ``MF_OPTIONS``: "asha:bo+all_rungs",
#: "asha:bo+promote", both "asha:bo+all_rungs+promote"), or Optuna's TPE with one of its
#: pruners; tables list these first, any other method after
MF_METHODS = ("random", "bo", "asha:random", "asha:optuna_tpe", "asha:bo", "asha:bo+all_rungs", "asha:bo+promote",
              "asha:bo+all_rungs+promote", "hyperband:random", "hyperband:bo", "hyperband:bo+all_rungs",
              "hyperband:bo+promote", "hyperband:bo+all_rungs+promote", "sh:random", "optuna:hyperband", "optuna:sh")
#: a method's "+NAME" suffixes: the [fidelity] keys they set
MF_OPTIONS = {"all_rungs": ("model", "all_rungs"), "promote": ("promote", "model")}


def mf_method(method: str) -> tuple[str, str, dict[str, str]]:
    """"SCHEDULER:OPTIMIZER[+all_rungs][+promote]" -> (scheduler, optimizer, [fidelity] keys);
    the scheduler is "" for full fidelity ("bo")."""
    scheduler, _, rest = method.rpartition(":")
    optimizer, *suffixes = rest.split("+")
    unknown = [x for x in suffixes if x not in MF_OPTIONS]
    if unknown:
        raise ValueError(f"method {method!r}: unknown +{unknown[0]}; use +{' or +'.join(MF_OPTIONS)}")
    return scheduler, optimizer, dict(MF_OPTIONS[x] for x in suffixes)


@dataclass
class MFRow:
    function: str
    method: str
    seed: int
    budget: float  # resource units: full-fidelity trials x max
    #: (resource spent so far, noiseless regret) each time a configuration reaches full fidelity
    trace: list[tuple[float, float]]
    seconds: float
    #: jobs run per rung's resource ("4": 35, "8": 31, ...): how many configurations each rung took
    jobs: dict[str, int] = field(default_factory=dict)


def _mf_row(function: str, method: str, trials: int, seed: int, r_min: float, r_max: float, eta: int,
            noise: float) -> MFRow:
    import json
    import tempfile
    from pathlib import Path

    import torch

    from llmhpo.config import FidelityConfig
    from llmhpo.objectives.synthetic import FunctionObjective, SleepSpec
    from llmhpo.runner import run

    torch.set_num_threads(1)
    f = get_function(function)
    obj = FunctionObjective(function)
    budget = trials * r_max
    t0 = time.time()
    if method.startswith("optuna:"):
        trace = _optuna_pruned(obj, method.split(":")[1], budget, seed, r_min, r_max, eta, noise)
        return MFRow(function, method, seed, budget, trace, time.time() - t0)
    scheduler, optimizer, keys = mf_method(method)
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "log.jsonl"
        cfg = Config(
            study=StudyConfig(f"mf-{function}-{method}-{seed}", f"sqlite:///{d}/s.db", "minimize", seed),
            budget=Budget(trials if not scheduler else 0, None, budget if scheduler else None),
            runner=RunnerConfig(1, "inline", max_repeated_failures=0), optimizer=optimizer, optimizer_options={},
            objective=SleepSpec(0.0, function, None, str(log), None, noise), space=obj.space(), base_dir=d,
            fidelity=FidelityConfig(r_min, r_max, "steps", eta, scheduler, 0, "ckpt", **keys) if scheduler
            else None)
        run(cfg, quiet=True, preflight=False)
        spent, trace, jobs = 0.0, [], {}
        for line in log.read_text().splitlines():
            e = json.loads(line)
            spent += e.get("trained", r_max)
            rung = f"{e.get('steps', r_max):g}"
            jobs[rung] = jobs.get(rung, 0) + 1
            if e.get("steps", r_max) >= r_max:
                trace.append((spent, f(list(e["params"].values())) - f.f_min))
    return MFRow(function, method, seed, budget, trace, time.time() - t0, jobs)


def _optuna_pruned(obj, pruner: str, budget: float, seed: int, r_min: float, r_max: float, eta: int,
                   noise: float) -> list[tuple[float, float]]:
    """Optuna's TPE with its HyperbandPruner or SuccessiveHalvingPruner on the same curves,
    reporting at the same rungs, until the same resource is spent."""
    import optuna

    from llmhpo.schedulers import rungs

    r = rungs(r_min, r_max, eta)
    pruner_obj = (optuna.pruners.HyperbandPruner(min_resource=int(r_min), max_resource=int(r_max),
                                                 reduction_factor=eta)
                  if pruner == "hyperband" else
                  optuna.pruners.SuccessiveHalvingPruner(min_resource=int(r_min), reduction_factor=eta))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner_obj)
    rng = np.random.default_rng(seed)
    f = obj.function
    spent, trace = 0.0, []
    while spent < budget:
        trial = study.ask()
        x = [trial.suggest_float(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(f.bounds)]
        prev, y, pruned = 0.0, None, False
        for step in r:
            if spent + step - prev > budget + 1e-9:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return trace
            spent += step - prev
            prev = step
            y = obj.curve_value(x, step, r_max) + noise * float(rng.standard_normal())
            trial.report(y, int(step))
            if step < r_max and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                break
        if not pruned:
            study.tell(trial, y)
            trace.append((spent, f(x) - f.f_min))
    return trace


def run_mf_bench(methods: list[str], functions: list[str], trials: int, seeds: int, r_min: float, r_max: float,
                 eta: int = 3, noise: float = 0.0, workers: int = 1,
                 on_row: Callable[[MFRow], None] | None = None) -> list[MFRow]:
    jobs = [(f, m, trials, s, r_min, r_max, eta, noise) for f in functions for m in methods for s in range(seeds)]
    return run_jobs(_mf_row, jobs, workers, on_row)


def resource_to_reach(row: MFRow, target: float) -> float:
    """The resource spent when the best full-fidelity regret first reached ``target`` (inf: never)."""
    best = math.inf
    for spent, regret in row.trace:
        best = min(best, regret)
        if best <= target + 1e-12:
            return spent
    return math.inf


def summarise_mf(rows: list[MFRow], reference: str = "random") -> list[dict[str, Any]]:
    """Per function and method: the median final regret, and the median fraction of the
    budget needed to reach the regret that full-fidelity ``reference`` reached with its whole
    budget on the same seed (inf when a run never did; ``reached`` counts the runs that did)."""
    out = []
    for fn in sorted({r.function for r in rows}):
        ref = {r.seed: min((g for _, g in r.trace), default=math.inf) for r in rows
               if r.function == fn and r.method == reference}
        ran = list(dict.fromkeys(r.method for r in rows if r.function == fn))
        for m in sorted(ran, key=lambda m: MF_METHODS.index(m) if m in MF_METHODS else len(MF_METHODS)):
            group = [r for r in rows if r.function == fn and r.method == m]
            fracs = [resource_to_reach(r, ref[r.seed]) / r.budget for r in group if r.seed in ref]
            finals = [min((g for _, g in r.trace), default=math.inf) for r in group]
            out.append({"function": fn, "method": m, "median_final_regret": statistics.median(finals),
                        "median_fraction_to_reach": statistics.median(fracs) if fracs else math.nan,
                        "reached": sum(math.isfinite(x) for x in fracs), "seeds": len(group),
                        "mean_seconds": statistics.mean(r.seconds for r in group)})
    return out


def mf_markdown(summary: list[dict[str, Any]], reference: str) -> str:
    lines = [f"| function | method | median final regret | median budget fraction to reach full-fidelity "
             f"{reference}'s best | runs that reach it | s / run |", "|---|---|---:|---:|---:|---:|"]
    for s in summary:
        frac = s["median_fraction_to_reach"]
        lines.append(f"| {s['function']} | {s['method']} | {s['median_final_regret']:.3g} | "
                     f"{'never' if not math.isfinite(frac) else f'{frac:.0%}'} | {s['reached']}/{s['seeds']} | "
                     f"{s['mean_seconds']:.1f} |")
    return "\n".join(lines)
