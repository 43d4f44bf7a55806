"""``llmhpo demo``: an offline HPO study of SmolLM2-135M-Instruct on the project's own
addition task with the report's search space, sized for 2 CPU cores and about 10 minutes."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

from llmhpo.config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def demo_config(out: Path, trials: int, workers: int) -> Config:
    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    raw["study"]["storage"] = f"sqlite:///{(out / 'demo.db').as_posix()}"
    raw["train"]["output_dir"] = str(out)
    cfg = Config.from_dict(raw, default_name="demo")
    executor = "process" if workers > 1 else "inline"
    return replace(cfg, budget=replace(cfg.budget, trials=trials),
                   runner=replace(cfg.runner, workers=workers, executor=executor))


def run_demo(out: Path, trials: int = 6, workers: int = 1, overwrite: bool = False, console=None) -> dict:
    from rich.console import Console

    from llmhpo.objectives.finetune import FinetuneObjective, preflight
    from llmhpo.runner import run
    from llmhpo.study import Study

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out, trials, workers)
    console.print(f"[bold]llmhpo demo[/]: {cfg.optimizer.upper()} over the report's search space "
                  f"({', '.join(cfg.space.names)}), {trials} trials")
    for line in preflight(cfg, verbose=True):
        console.print(f"  {line}")

    study = Study.open(cfg, overwrite=overwrite)
    objective = FinetuneObjective.from_config_dict(cfg.to_dict())
    base = study.optuna_study.user_attrs.get("base_metrics")
    if base is None:
        console.print("scoring the base model (no adapter)...")
        base = objective.evaluate_base()
        study.optuna_study.set_user_attr("base_metrics", base)
    metric = objective.cfg.eval.objective
    console.print(f"base model {metric} = {base[metric]:.3f}")

    # one worker: reuse the objective (and its loaded model) in this process
    summary = run(cfg, overwrite=False, progress=True,
                  objective_factory_override=(lambda: objective) if workers == 1 else None)
    best = Study.load(cfg.study.storage, cfg.study.name).best()
    console.print()
    console.print(f"base model   {metric} = {base[metric]:.3f}")
    if best is None:
        console.print("[red]no trial completed[/]; see `llmhpo status` for the errors")
        return {"base": base, "best": None}
    console.print(f"best trial   {metric} = {best.value:.3f}  (trial {best.number} of {summary.complete + summary.failed}, "
                  f"{summary.seconds / 60:.1f} min)")
    for k, v in best.params.items():
        console.print(f"    {k} = {v:.4g}" if isinstance(v, float) else f"    {k} = {v}")
    m = best.attrs.get("metrics", {})
    for k in sorted(m):
        if k.startswith("llmhpo_general/acc") or k == "val_loss":
            console.print(f"    [dim]{k}: {m[k]:.3f} (base {base.get(k, float('nan')):.3f})[/]" if k in base
                          else f"    [dim]{k}: {m[k]:.3f}[/]")
    console.print(f"study:        {cfg.study.storage}  (llmhpo status {out / 'demo.db'})")
    console.print(f"best adapter: {m.get('adapter_dir')}")
    console.print(f"export:       llmhpo best {out / 'demo.db'} --export {out / 'best'} [--merge]")
    result = {"base": base[metric], "best": best.value, "params": best.params, "minutes": summary.seconds / 60,
              "trials": summary.complete + summary.failed}
    (out / "demo-result.json").write_text(json.dumps(result, indent=1, default=str))
    return result
