"""``llmhpo demo``: an offline HPO study of SmolLM2-135M-Instruct on the project's own
addition task with the report's search space, sized for 2 CPU cores and about 10 minutes."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

from llmhpo.config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def demo_config(out: Path, trials: int, workers: int) -> Config:
    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    raw["budget"]["trials"] = trials
    raw["runner"]["workers"] = workers
    raw["study"]["storage"] = "demo.db"
    raw["train"]["output_dir"] = "."
    return Config.from_dict(raw, default_name="demo", base_dir=Path(out).resolve())


def run_demo(out: Path, trials: int = 6, workers: int = 1, overwrite: bool = False, console=None) -> dict:
    from rich.console import Console
    from rich.markup import escape

    from llmhpo.objectives.finetune.kind import objective_for
    from llmhpo.runner import run
    from llmhpo.study import Study

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out, trials, workers)
    console.print(f"[bold]llmhpo demo[/]: {cfg.optimizer.upper()} over the report's search space "
                  f"({', '.join(cfg.space.names)}), {trials} trials")
    for line in cfg.kind.preflight(cfg.objective, cfg.space, cfg.runner.devices, cfg.fidelity):
        console.print(f"  {escape(line)}", highlight=False)

    study = Study.open(cfg, overwrite=overwrite)
    base = study.optuna_study.user_attrs.get("base_metrics")
    metric = cfg.objective.eval.objective
    if base is None:
        console.print("scoring the base model (no adapter)...")
        # the process's own objective: with one worker the trials reuse its loaded model
        base = objective_for(cfg.objective).evaluate_base()
        study.optuna_study.set_user_attr("base_metrics", base)
    console.print(f"base model {metric} = {base[metric]:.3f}")

    summary = run(cfg, preflight=False)  # done above
    best = Study.load(cfg.study.storage, cfg.study.name).best()
    console.print()
    console.print(f"base model   {metric} = {base[metric]:.3f}")
    if best is None:
        console.print(f"[red]no trial completed[/]; see `llmhpo status {out / 'demo.db'}` for the reasons")
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
    console.print(f"study:        {escape(cfg.study.storage)}  (llmhpo status {escape(str(out / 'demo.db'))})")
    console.print(f"best adapter: {escape(str(m.get('adapter_dir')))}")
    console.print(f"export:       llmhpo best {escape(str(out / 'demo.db'))} --export {escape(str(out / 'best'))} \\[--merge]")
    result = {"base": base[metric], "best": best.value, "params": best.params, "minutes": summary.seconds / 60,
              "trials": summary.complete + summary.failed}
    (out / "demo-result.json").write_text(json.dumps(result, indent=1, default=str))
    return result
