"""Optimisers x benchmark functions x seeds: the comparison table of ``llmhpo bench``.

Every repeat is a full study run by the same runner as ``llmhpo run`` (in-memory storage,
one trial at a time), so the bench measures exactly what users run. Repeats run in
parallel worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
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
