"""Several objectives: our bo (qLogNEHVI; under constraints weighted by the probability of
feasibility) against Optuna's NSGA-II, TPE and GPSampler and random search, in the same run,
on problems with known fronts (the protocol: ``llmhpo.lab.mobench``): hypervolume regret at
budgets 25, 50 and 100 over the seeds, medians with bootstrap CIs, mean ranks, paired
Wilcoxon tests, seconds per run. Writes docs/measurements/multiobjective.json and .md, and
keeps every finished run in PREFIX.runs.jsonl as it ends: a rerun skips those.

usage: python benchmarks/multiobjective.py [--seeds 10] [--budget 100] [--workers 2]
       [--problems all] [--optimizers bo,optuna_nsga2,optuna_tpe,optuna_gp,random] [--out PREFIX]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from llmhpo._json import jsonable
from llmhpo.lab.bench import Spec
from llmhpo.lab.mobench import BUDGETS, PROBLEMS, MORun, markdown_table, run_mobench, runs_to_json, summarise, wins

#: NSGA-II's population: Optuna's default of 50 would leave two generations in 100 evaluations
OPTIONS = {"optuna_nsga2": {"population_size": 20}}
ANCHORS = ("optuna_nsga2", "optuna_tpe", "optuna_gp")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", default="all")
    ap.add_argument("--optimizers", default="bo,optuna_nsga2,optuna_tpe,optuna_gp,random")
    ap.add_argument("--out", default="docs/measurements/multiobjective", help="PREFIX for PREFIX.json and PREFIX.md")
    a = ap.parse_args(argv)
    problems = list(PROBLEMS) if a.problems == "all" else a.problems.split(",")
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        sys.exit(f"unknown problem {unknown[0]!r}; choose from: {', '.join(PROBLEMS)}")
    specs = [Spec(o, o, OPTIONS.get(o, {})) for o in a.optimizers.split(",")]
    t0 = time.time()
    total = len(problems) * len(specs) * a.seeds

    def done(r) -> None:
        done.n += 1
        print(f"[{done.n}/{total}, {time.time() - t0:.0f} s] {r.optimizer} on {r.problem}, seed {r.seed}: "
              f"regret {r.regret():.4g} in {r.seconds():.1f} s", file=sys.stderr, flush=True)
    done.n = 0

    # every finished run is kept at once, so a stopped benchmark goes on where it stopped
    runs_file = Path(a.out + ".runs.jsonl")
    kept = [MORun(**json.loads(line)) for line in runs_file.read_text().splitlines()] if runs_file.is_file() else []
    kept = [r for r in kept if len(r.values) >= a.budget and r.problem in problems and r.seed < a.seeds
            and r.optimizer in {s.label for s in specs}]
    runs_file.parent.mkdir(parents=True, exist_ok=True)

    def keep(r) -> None:
        with runs_file.open("a") as f:
            f.write(json.dumps(jsonable(runs_to_json([r])[0])) + "\n")
        done(r)

    total -= len(kept)
    rows = kept + run_mobench(specs, problems, a.budget, a.seeds, a.workers, on_row=keep,
                              skip=frozenset((r.problem, r.optimizer, r.seed) for r in kept))
    budgets = [b for b in BUDGETS if b < a.budget] + [a.budget]
    summaries = {b: summarise(rows, b) for b in budgets}
    headline = 50 if 50 in summaries else a.budget
    won = wins(summaries[headline], "bo", ANCHORS)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/multiobjective.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {a.workers} worker process(es), "
                       "one torch thread each", "seconds": round(time.time() - t0, 1),
            "budget": a.budget, "seeds": a.seeds, "problems": problems, "optimizers": [s.__dict__ for s in specs],
            "protocol": "llmhpo.lab.mobench: coordinates folded and permuted per seed (the front unchanged), "
                        "hypervolume regret in normalised objectives against (1.1, ..., 1.1)"}
    out.with_suffix(".json").write_text(json.dumps(jsonable({
        **meta, "bo_below_every_anchor_at": {str(headline): won},
        "summary_by_budget": {str(b): s for b, s in summaries.items()}, "runs": runs_to_json(rows)})))
    md = [f"# Several objectives: hypervolume regret ({a.seeds} seeds)", "", f"`{meta['command']}`, {meta['date']}, "
          f"{meta['machine']}, {meta['seconds']:.0f} s in all.", "",
          f"bo's median regret at budget {headline} is below every Optuna sampler's on {len(won['problems'])} of "
          f"{won['of']} problems ({', '.join(won['problems']) or 'none'}).", ""]
    for b in budgets:
        md += [f"## Budget {b}", "", markdown_table(summaries[b]), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
