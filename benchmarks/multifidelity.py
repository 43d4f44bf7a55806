"""Multi-fidelity against full-fidelity search on the learning-curve benchmark family
(objectives/synthetic.py): the share of the full budget each method needs to reach the
regret that full-fidelity random search, and BO, reach with the whole budget.
usage: python benchmarks/multifidelity.py [SEEDS] [WORKERS]"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from llmhpo.lab.bench import mf_markdown, run_mf_bench, summarise_mf
from llmhpo.objectives.synthetic import FunctionObjective

METHODS = ["random", "bo", "asha:random", "asha:optuna_tpe", "hyperband:random", "hyperband:bo", "sh:random",
           "optuna:hyperband", "optuna:sh"]


def main(seeds: int, workers: int) -> None:
    rows = []
    for f in ("branin", "hartmann6"):
        sigma = 0.02 * FunctionObjective(f).scale()
        rows += run_mf_bench(METHODS, [f], trials=30, seeds=seeds, r_min=1, r_max=27, eta=3, noise=sigma,
                             workers=workers)
    out = {"trials": 30, "rungs": "1:27:3", "noise": "0.02 x scale", "seeds": seeds,
           "vs_random": summarise_mf(rows, "random"), "vs_bo": summarise_mf(rows, "bo"),
           "runs": [dataclasses.asdict(r) for r in rows]}
    Path("docs/measurements/multifidelity.json").write_text(json.dumps(out, indent=1, default=str))
    print(mf_markdown(out["vs_random"], "random"))
    print()
    print(mf_markdown(out["vs_bo"], "bo"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, int(sys.argv[2]) if len(sys.argv) > 2 else 2)
