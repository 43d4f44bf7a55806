"""CPU workers sharing the cores: the demo-sized fine-tuning trial (``llmhpo/demo.toml``:
SmolLM2-135M, 16 steps of 8 examples, lm-eval on 40 questions) at 1 and 2 process workers,
each worker on its share of the usable cores (the default: cores // workers threads) or on
all of them (the old behaviour, asked for here with [train] threads = cores).

    python benchmarks/cpu_workers.py --trials 4 --workers 1,2 --json docs/measurements/cpu_workers.json

For each (workers, threads) setting: the wall time of the study (the workers' model loads
included), the mean seconds of a trial as its worker timed it, and trials per hour
(trials / wall). The base model is not scored (``[eval] base = false``), so every second
is a trial's. ``--trials 1 --workers 1 --modes split --smoke`` (2 steps, 4 questions) checks
that the script runs, in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def one(trials: int, workers: int, mode: str, model: str | None, smoke: bool = False) -> dict:
    """One study of ``trials`` demo trials on ``workers`` process workers; mode "split"
    (the default share) or "all" (every worker on every core)."""
    from importlib import resources

    from llmhpo.config import Config
    from llmhpo.executors.ranks import usable_cores
    from llmhpo.runner import run
    from llmhpo.study import Study

    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as d:
        raw["study"].update(name="cpu", storage="cpu.db")
        raw["budget"]["trials"] = trials
        raw["runner"] = {"workers": workers, "executor": "process"}
        raw["train"]["output_dir"] = "."
        raw["train"]["save_adapters"] = False
        raw["eval"]["base"] = False
        if mode == "all":
            raw["train"]["threads"] = cores
        if model is not None:
            raw["model"]["name"] = model
        if smoke:
            raw["train"]["max_steps"] = 2
            raw["eval"].update(limit=4, tasks=["llmhpo_add"])
        cfg = Config.from_dict(raw, default_name="cpu", base_dir=Path(d))
        t0 = time.time()
        run(cfg, progress=False, quiet=True)
        wall = time.time() - t0
        recs = [r for r in Study.load(cfg.study.storage, "cpu").records() if r.state == "COMPLETE"]
    seconds = [float(r.attrs.get("timings", {}).get("trial") or r.attrs.get("timings", {}).get("total") or 0)
               for r in recs]
    threads = sorted({r.attrs.get("metrics", {}).get("threads") for r in recs} - {None})
    return {"workers": workers, "mode": mode, "cores": cores, "threads": threads, "trials": len(recs),
            "wall_s": round(wall, 1), "seconds_per_trial": round(statistics.mean(seconds), 1) if seconds else None,
            "trials_per_hour": round(len(recs) / wall * 3600, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--modes", default="all,split", help="all (every worker on every core), split (the default)")
    ap.add_argument("--model", default=None, help="another model than the demo's builtin SmolLM2")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--smoke", action="store_true", help="2 steps and 4 questions a trial: does it run")
    args = ap.parse_args()
    rows = []
    print(f"{'workers':>7} {'mode':>6} {'threads':>8} {'trials':>6} {'wall s':>8} {'s/trial':>8} {'trials/h':>9}")
    for workers in (int(w) for w in args.workers.split(",")):
        for mode in args.modes.split(","):
            r = one(args.trials, workers, mode, args.model, args.smoke)
            rows.append(r)
            print(f"{r['workers']:>7} {r['mode']:>6} {','.join(map(str, r['threads'])):>8} {r['trials']:>6} "
                  f"{r['wall_s']:>8} {r['seconds_per_trial']!s:>8} {r['trials_per_hour']:>9}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
