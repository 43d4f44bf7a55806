"""Parallel efficiency of the driver: wall time against the ideal, per optimiser and
worker count, on the local process pool and on Ray.

The objective is the ``sleep`` kind with durations that vary as real trials do: 1 s times a
lognormal factor of mean 1 and sigma 0.5, drawn from the point itself. For each run:

    ideal = sum of the trials' durations / workers
    bound = the same durations, in the same order, given greedily to the first free worker
            with no overhead at all: the best any driver can do without knowing durations
            in advance (lognormal tails make it ~1.12 x ideal at 64 trials on 8 workers)
    span  = last trial end - first trial start (what the driver controls)
    wall  = the whole run, worker start-up included

and the best value reached at the budget (what asking in batches costs each optimiser).

    python benchmarks/parallel_efficiency.py --budget 64 --workers 1,2,4,8 \\
        --optimizers random,bo,soo,bamsoo --executors process,ray --json docs/measurements/parallel.json

``--seeds N`` repeats every setting with seeds 0 .. N-1 (the study's seed and the draw of
durations, ``seconds_seed``) and ends with the means over seeds: one seed's bound swings
from ~1.05 to ~1.20 x ideal at 8 workers, so one run says little about a ratio near 1.1.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TOML = """
[study]
name = "eff"
storage = "sqlite:///{db}"
seed = {seed}
[budget]
trials = {budget}
[runner]
workers = {workers}
executor = "{executor}"
{extra}
[optimizer]
name = "{optimizer}"
[objective]
type = "sleep"
seconds = 1.0
seconds_sigma = 0.5
seconds_seed = {seed}
function = "branin"
{fidelity}"""

# multi-fidelity (--fidelity min:max:eta): ASHA over rungs of "steps"; each job sleeps its share
# of the configuration's full duration (the increment from its last rung), and every job's start
# and end go to the sleep objective's log, since a trial's attributes keep only its last rung's
FIDELITY = """log = "{log}"
[fidelity]
resource = "steps"
min = {min}
max = {max}
eta = {eta}
scheduler = "asha"
"""


def one(optimizer: str, workers: int, executor: str, budget: int, seed: int, fidelity: str | None = None) -> dict:
    import optuna

    from llmhpo.config import load_config
    from llmhpo.runner import run

    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "eff.db"
        extra = "cpus_per_trial = 0.25" if executor == "ray" else ""
        toml = Path(d) / "eff.toml"
        fd = ""
        if fidelity:
            lo, hi, eta = fidelity.split(":")
            fd = FIDELITY.format(log=Path(d) / "jobs.jsonl", min=lo, max=hi, eta=eta)
        toml.write_text(TOML.format(db=db, seed=seed, budget=budget, workers=workers, optimizer=optimizer,
                                    executor="process" if executor == "process" else "ray", extra=extra,
                                    fidelity=fd))
        t0 = time.time()
        s = run(load_config(toml), progress=False, quiet=True)
        wall = time.time() - t0
        if fidelity:  # every job (rung) is one line of the log, in the order they started
            jobs = sorted((json.loads(line) for line in (Path(d) / "jobs.jsonl").read_text().splitlines()),
                          key=lambda j: j["start"])
            starts, ends = [j["start"] for j in jobs], [j["end"] for j in jobs]
            durations = [e - b for b, e in zip(starts, ends)]
        else:
            trials = sorted((t for t in optuna.load_study(study_name="eff", storage=f"sqlite:///{db}").trials
                             if t.state.name == "COMPLETE"), key=lambda t: t.number)
            starts = [t.user_attrs["worker"]["start"] for t in trials]
            ends = [t.user_attrs["worker"]["end"] for t in trials]
            durations = [t.user_attrs["timings"]["sleep"] for t in trials]
    ideal = sum(durations) / workers
    free = [0.0] * workers
    for x in durations:  # list scheduling of the same durations, in the same order, no overhead
        heapq.heapreplace(free, free[0] + x)
    bound = max(free)
    span = max(ends) - min(starts)
    return {"optimizer": optimizer, "workers": workers, "executor": executor, "budget": budget, "seed": seed,
            "fidelity": fidelity, "jobs": len(durations), "complete": s.complete, "ideal": ideal, "bound": bound, "span": span, "wall": wall, "span_ratio": span / ideal,
            "wall_ratio": wall / ideal, "best": s.best_value}


def simulate(budget: int, workers: int, sigma: float = 0.5, draws: int = 20000, seed: int = 0) -> dict:
    """The zero-overhead bound's distribution: list scheduling of ``budget`` lognormal
    durations (mean 1, ``sigma``) on ``workers``, over ``draws`` draws, against ideal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(draws):
        d = rng.lognormal(-sigma * sigma / 2, sigma, budget)
        free = [0.0] * workers
        for x in d:
            heapq.heapreplace(free, free[0] + x)
        ratios.append(max(free) / (d.sum() / workers))
    r = np.asarray(ratios)
    return {"mean": float(r.mean()), "median": float(np.median(r)), "p10": float(np.percentile(r, 10)),
            "p90": float(np.percentile(r, 90)), "share_at_most_1.10": float((r <= 1.10).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--optimizers", default="random,bo,soo,bamsoo")
    ap.add_argument("--executors", default="process,ray")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per setting (means at the end)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fidelity", help="min:max:eta: multi-fidelity (ASHA over rungs of steps); the budget is "
                                       "then that many full trials' worth of steps")
    ap.add_argument("--simulate", action="store_true",
                    help="only print the zero-overhead bound's distribution (bound / ideal) for each worker count")
    a = ap.parse_args()
    if a.simulate:
        for w in [int(x) for x in a.workers.split(",")]:
            print(f"{w} workers: " + ", ".join(f"{k} {v:.3f}" for k, v in simulate(a.budget, w).items()))
        return
    rows = []
    if "ray" in a.executors:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # a local cluster; each worker actor asks for 0.25 CPU, so 8 fit (sleeping trials need no more)
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    print("| executor | optimizer | workers | seed | ideal s | bound s | span s | span/ideal | span/bound | wall s | "
          "wall/ideal | best |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    settings = [(e, o, int(w)) for e in a.executors.split(",") for o in a.optimizers.split(",")
                for w in a.workers.split(",")]
    for executor, opt, w in settings:
        for seed in range(a.seed, a.seed + a.seeds):
            r = one(opt, w, executor, a.budget, seed, a.fidelity)
            rows.append(r)
            print(f"| {executor} | {opt} | {w} | {seed} | {r['ideal']:.1f} | {r['bound']:.1f} | {r['span']:.1f} | "
                  f"{r['span_ratio']:.2f} | {r['span'] / r['bound']:.2f} | {r['wall']:.1f} | "
                  f"{r['wall_ratio']:.2f} | {r['best']:.4g} |", flush=True)
            if a.json:
                a.json.parent.mkdir(parents=True, exist_ok=True)
                a.json.write_text(json.dumps(rows, indent=1))
    if a.seeds > 1:
        print(f"\nMeans over {a.seeds} seeds:\n")
        print("| executor | optimizer | workers | bound/ideal | span/bound | wall/bound | wall/ideal | "
              "wall/ideal max | median best |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for executor, opt, w in settings:
            rs = [r for r in rows if (r["executor"], r["optimizer"], r["workers"]) == (executor, opt, w)]
            mean = lambda f: statistics.fmean(f(r) for r in rs)  # noqa: E731
            print(f"| {executor} | {opt} | {w} | {mean(lambda r: r['bound'] / r['ideal']):.3f} | "
                  f"{mean(lambda r: r['span'] / r['bound']):.3f} | {mean(lambda r: r['wall'] / r['bound']):.3f} | "
                  f"{mean(lambda r: r['wall_ratio']):.3f} | {max(r['wall_ratio'] for r in rs):.3f} | "
                  f"{statistics.median(r['best'] for r in rs):.4g} |")


if __name__ == "__main__":
    main()
