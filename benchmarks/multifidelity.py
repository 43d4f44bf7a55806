"""Multi-fidelity against full-fidelity search on the learning-curve benchmark family
(objectives/synthetic.py): the share of the full budget each method needs to reach the
regret that full-fidelity random search, and BO, reach with the whole budget.

usage: python benchmarks/multifidelity.py [SEEDS] [WORKERS] [--methods M,M,...] [--functions F,F,...]
                                          [--fidelity MIN:MAX:ETA] [--json PATH]
Methods are "random", "bo" (full fidelity), "SCHEDULER:OPTIMIZER[+MODEL]" ("asha:bo+all_rungs")
or "optuna:PRUNER". With the default methods and functions the runs go to
docs/measurements/multifidelity.json; with others, only to --json when it is given."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from llmhpo.lab.bench import mf_markdown, run_mf_bench, summarise_mf
from llmhpo.objectives.synthetic import FunctionObjective

METHODS = ["random", "bo", "asha:random", "asha:optuna_tpe", "hyperband:random", "hyperband:bo", "sh:random",
           "optuna:hyperband", "optuna:sh"]
FUNCTIONS = ["branin", "hartmann6"]
RECORDED = Path("docs/measurements/multifidelity.json")


def main(seeds: int, workers: int, methods: list[str], functions: list[str], fidelity: str,
         out: Path | None) -> None:
    r_min, r_max, eta = (float(v) for v in fidelity.split(":"))
    rows = []
    for f in functions:
        sigma = 0.02 * FunctionObjective(f).scale()
        rows += run_mf_bench(methods, [f], trials=30, seeds=seeds, r_min=r_min, r_max=r_max, eta=int(eta),
                             noise=sigma, workers=workers)
    result = {"trials": 30, "rungs": fidelity, "noise": "0.02 x scale", "seeds": seeds,
              "vs_random": summarise_mf(rows, "random"), "vs_bo": summarise_mf(rows, "bo"),
              "runs": [dataclasses.asdict(r) for r in rows]}
    if out is not None:
        out.write_text(json.dumps(result, indent=1, default=str))
    print(mf_markdown(result["vs_random"], "random"))
    print()
    print(mf_markdown(result["vs_bo"], "bo"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seeds", nargs="?", type=int, default=10)
    ap.add_argument("workers", nargs="?", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (random and bo are "
                    "the references: keep them)")
    ap.add_argument("--functions", default=",".join(FUNCTIONS), help="comma-separated bench functions")
    ap.add_argument("--fidelity", default="1:27:3", help="MIN:MAX:ETA of the rungs (lora_smollm2: 4:16:2)")
    ap.add_argument("--json", type=Path, default=None, help="where the runs go (default: the recorded file, "
                    "with the default methods and functions)")
    a = ap.parse_args()
    methods, functions = a.methods.split(","), a.functions.split(",")
    default = methods == METHODS and functions == FUNCTIONS and a.fidelity == "1:27:3"
    main(a.seeds, a.workers, methods, functions, a.fidelity, a.json or (RECORDED if default else None))
