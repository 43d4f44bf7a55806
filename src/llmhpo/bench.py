"""Optimisers x benchmark functions x seeds: the comparison table of ``llmhpo bench``.

Every repeat is a full study run by the same runner as ``llmhpo run`` (in-memory storage,
one trial at a time), so the bench measures exactly what users run. Repeats run in
parallel worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from llmhpo.config import Budget, Config, RunnerConfig, StudyConfig
from llmhpo.objectives.functions import get_function
from llmhpo.objectives.synthetic import FunctionObjective, FunctionSpec


@dataclass
class BenchRow:
    function: str
    optimizer: str
    seed: int
    best_regret: float
    evaluations: int
    seconds: float


def function_config(function: str, optimizer: str, budget: int, seed: int, dim: int | None = None,
                    options: dict[str, Any] | None = None) -> Config:
    return Config(
        study=StudyConfig(f"bench-{function}-{optimizer}-{seed}", None, "minimize", seed),
        budget=Budget(budget), runner=RunnerConfig(1, "inline", max_repeated_failures=0),
        optimizer=optimizer, optimizer_options=dict(options or {}),
        objective=FunctionSpec(function, dim), space=FunctionObjective(function, dim).space(),
    )


def run_one(function: str, optimizer: str, budget: int, seed: int, dim: int | None = None) -> BenchRow:
    import torch

    from llmhpo.runner import run

    torch.set_num_threads(1)
    cfg = function_config(function, optimizer, budget, seed, dim)
    t0 = time.time()
    summary = run(cfg, quiet=True, preflight=False)
    f = get_function(function, dim)
    regret = (summary.best_value - f.f_min) if summary.best_value is not None else float("inf")
    return BenchRow(function, optimizer, seed, max(regret, 0.0), summary.complete + summary.failed, time.time() - t0)


def run_bench(optimizers: list[str], functions: list[str], budget: int, seeds: int, workers: int = 1,
              dim: int | None = None, on_row: Callable[[BenchRow], None] | None = None) -> list[BenchRow]:
    jobs = [(f, o, budget, s, dim) for f in functions for o in optimizers for s in range(seeds)]
    rows: list[BenchRow] = []
    if workers <= 1:
        for job in jobs:
            rows.append(run_one(*job))
            if on_row:
                on_row(rows[-1])
        return rows
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(run_one, *job) for job in jobs]
        for fut in cf.as_completed(futs):
            rows.append(fut.result())
            if on_row:
                on_row(rows[-1])
    return rows


def summarise(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Per function x optimiser: median and mean best regret, mean rank (1 = best) over seeds."""
    by_fs: dict[tuple[str, int], list[BenchRow]] = {}
    for r in rows:
        by_fs.setdefault((r.function, r.seed), []).append(r)
    ranks: dict[tuple[str, str], list[float]] = {}
    for group in by_fs.values():
        regrets = np.array([r.best_regret for r in group])
        # average ranks for ties
        order = regrets.argsort(kind="stable")
        rk = np.empty(len(group))
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and regrets[order[j + 1]] == regrets[order[i]]:
                j += 1
            rk[order[i:j + 1]] = (i + j) / 2 + 1
            i = j + 1
        for r, k in zip(group, rk):
            ranks.setdefault((r.function, r.optimizer), []).append(float(k))
    out = []
    keys = sorted({(r.function, r.optimizer) for r in rows}, key=lambda k: (k[0], statistics.mean(ranks[k])))
    for f, o in keys:
        regs = [r.best_regret for r in rows if r.function == f and r.optimizer == o]
        secs = [r.seconds for r in rows if r.function == f and r.optimizer == o]
        out.append({"function": f, "optimizer": o, "median_regret": statistics.median(regs),
                    "mean_regret": statistics.mean(regs), "mean_rank": statistics.mean(ranks[(f, o)]),
                    "seeds": len(regs), "mean_seconds": statistics.mean(secs)})
    return out


def markdown_table(summary: list[dict[str, Any]]) -> str:
    lines = ["| function | optimizer | median regret | mean regret | mean rank | s / run |",
             "|---|---|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['function']} | {s['optimizer']} | {s['median_regret']:.3g} | {s['mean_regret']:.3g} | "
                     f"{s['mean_rank']:.2f} | {s['mean_seconds']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- multi-fidelity
#: how the multi-fidelity bench spends its resource: full fidelity, a scheduler with one of
#: our optimisers ("asha:random"), or Optuna's TPE with one of its pruners
MF_METHODS = ("random", "bo", "asha:random", "asha:optuna_tpe", "hyperband:random", "hyperband:bo", "sh:random",
              "optuna:hyperband", "optuna:sh")


@dataclass
class MFRow:
    function: str
    method: str
    seed: int
    budget: float  # resource units: full-fidelity trials x max
    #: (resource spent so far, noiseless regret) each time a configuration reaches full fidelity
    trace: list[tuple[float, float]]
    seconds: float


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
    scheduler, _, optimizer = method.rpartition(":")
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "log.jsonl"
        cfg = Config(
            study=StudyConfig(f"mf-{function}-{method}-{seed}", f"sqlite:///{d}/s.db", "minimize", seed),
            budget=Budget(trials if not scheduler else 0, None, budget if scheduler else None),
            runner=RunnerConfig(1, "inline", max_repeated_failures=0), optimizer=optimizer, optimizer_options={},
            objective=SleepSpec(0.0, function, None, str(log), None, noise), space=obj.space(), base_dir=d,
            fidelity=FidelityConfig(r_min, r_max, "steps", eta, scheduler, 0, "ckpt") if scheduler else None)
        run(cfg, quiet=True, preflight=False)
        spent, trace = 0.0, []
        for line in log.read_text().splitlines():
            e = json.loads(line)
            spent += e.get("trained", r_max)
            if e.get("steps", r_max) >= r_max:
                trace.append((spent, f(list(e["params"].values())) - f.f_min))
    return MFRow(function, method, seed, budget, trace, time.time() - t0)


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
    rows: list[MFRow] = []
    if workers <= 1:
        for job in jobs:
            rows.append(_mf_row(*job))
            if on_row:
                on_row(rows[-1])
        return rows
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for fut in cf.as_completed([pool.submit(_mf_row, *job) for job in jobs]):
            rows.append(fut.result())
            if on_row:
                on_row(rows[-1])
    return rows


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
        for m in [m for m in MF_METHODS if any(r.method == m and r.function == fn for r in rows)]:
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
