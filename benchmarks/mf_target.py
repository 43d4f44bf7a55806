"""Two readings of the multi-fidelity target from recorded runs: how much stopping early could save
on full-fidelity BO's own runs (a bound), and when the median run of each method reaches BO's
median final regret.

Bound: for each run of method "bo" in a JSON written by ``benchmarks/multifidelity.py``, replay its
configurations in order with an oracle stopping rule: a configuration that improves the run's best
(noiseless) final regret runs to the top rung and costs the full resource; every other one is
stopped after the lowest rung and costs that rung's resource. The share of the budget spent when
the run's final best is reached is the least that any multi-fidelity method following BO's
proposals (and deciding from the lowest rung) could spend to reach it; a real rule sees only noisy
low-rung scores, and its model does not see the stopped configurations' final scores.

Median curve (how BOHB and DEHB report speed-ups): the share of the budget at which the median
over seeds of a method's best regret so far first reaches the median over seeds of full-fidelity
BO's final regret (``benchmarks/multifidelity.py`` asks it of each seed instead).

usage: python benchmarks/mf_target.py RUNS.json [RUNS.json ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from llmhpo.lab.bench import MFRow, resource_to_reach


def oracle_fraction(trace: list[tuple[float, float]], budget: float, r_min: float, r_max: float) -> float:
    """The share of ``budget`` an oracle stopping rule spends to reach the run's final best.
    trace: (resource spent, noiseless regret) of each full-fidelity configuration, in order."""
    final = min(g for _, g in trace)
    spent, best = 0.0, float("inf")
    for _, g in trace:
        if g < best:
            spent, best = spent + r_max, g
        else:
            spent += r_min
        if best <= final:
            break
    return spent / budget


def best_by(trace: list[tuple[float, float]], spent: float) -> float:
    """The best regret of the configurations that had reached the top rung when ``spent`` was spent."""
    return min((g for r, g in trace if r <= spent + 1e-9), default=float("inf"))


def median_curve_fraction(runs: list[MFRow], target: float) -> float | None:
    """The first share of the budget (in 1% steps) at which the median best regret so far is at
    most ``target``; None when it never is."""
    for pct in range(1, 101):
        if statistics.median(best_by(r.trace, r.budget * pct / 100) for r in runs) <= target:
            return pct / 100
    return None


def main(paths: list[Path]) -> None:
    """Each file is one invocation: its own full-fidelity BO runs are its methods' reference."""
    bound, curves = [], []
    for path in paths:
        d = json.loads(path.read_text())
        r_min, r_max, _ = (float(v) for v in d["rungs"].split(":"))
        groups: dict[tuple[str, str], list[MFRow]] = defaultdict(list)
        for run in d["runs"]:
            groups[run["function"], run["method"]].append(MFRow(**run))
        for (f, method), runs in sorted(groups.items()):
            bo = groups.get((f, "bo"))
            if not bo:
                continue
            if method == "bo":
                oracle = [oracle_fraction(r.trace, r.budget, r_min, r_max) for r in runs]
                own = [resource_to_reach(r, best_by(r.trace, r.budget)) / r.budget for r in runs]
                bound.append(f"| {path.name} | {f} | {len(runs)} | {statistics.median(oracle):.0%} "
                             f"({min(oracle):.0%}-{max(oracle):.0%}) | {statistics.median(own):.0%} |")
                continue
            at = median_curve_fraction(runs, statistics.median(best_by(r.trace, r.budget) for r in bo))
            curves.append(f"| {path.name} | {f} | {method} | {len(runs)} | {'never' if at is None else f'{at:.0%}'} |")
    print("| runs | function | seeds | oracle stopping: median budget fraction to reach BO's final best (range) "
          "| full-fidelity BO's own (median) |")
    print("|---|---|---:|---|---:|")
    print("\n".join(bound))
    print()
    print("| runs | function | method | seeds | median curve reaches full-fidelity BO's median final regret at |")
    print("|---|---|---|---:|---:|")
    print("\n".join(curves))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="JSON files written by benchmarks/multifidelity.py --json")
    main(ap.parse_args().runs)
