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


def demo_config(out: Path, trials: int, workers: int, model: str | None = None) -> Config:
    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    if model is not None:
        raw["model"]["name"] = str(model)
    raw["budget"]["trials"] = trials
    raw["runner"]["workers"] = workers
    raw["study"]["storage"] = "demo.db"
    raw["train"]["output_dir"] = "."
    return Config.from_dict(raw, default_name="demo", base_dir=Path(out).resolve())


def run_demo(out: Path, trials: int = 6, workers: int = 1, overwrite: bool = False, console=None,
             model: str | None = None) -> dict:
    """Run (or resume, or extend with more ``trials``) the demo study in ``out``; ``model``
    replaces the builtin SmolLM2 (a local folder or a hub id). Returns the base and best scores."""
    from rich.console import Console
    from rich.markup import escape

    from llmhpo.runner import run
    from llmhpo.study import Study

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out, trials, workers, model)
    console.print(f"[bold]llmhpo demo[/]: {cfg.optimizer.upper()} over the report's search space "
                  f"({', '.join(cfg.space.names)}), {trials} trials")
    from llmhpo.preflight import preflight

    for line in preflight(cfg, overwrite=overwrite):
        console.print(f"  {escape(line)}", highlight=False)

    summary = run(cfg, overwrite=overwrite, preflight=False)  # the base model is scored in it, once
    study = Study.load(cfg.study.storage, cfg.study.name)
    metric = cfg.objective.eval.objective
    base = study.base()
    best = study.best()
    console.print()
    base_value = None if base is None else base[0]
    console.print(f"base model   {metric} = " + ("not scored" if base is None else f"{base_value:.3f}"))
    if best is None:
        console.print(f"[red]no trial completed[/]; see `llmhpo status {out / 'demo.db'}` for the reasons")
        return {"base": base_value, "best": None}
    console.print(f"best trial   {metric} = {best.value:.3f}  (trial {best.number} of {summary.complete + summary.failed}, "
                  f"{summary.seconds / 60:.1f} min this run)")
    for k, v in best.params.items():
        console.print(f"    {k} = {v:.4g}" if isinstance(v, float) else f"    {k} = {v}")
    m = best.attrs.get("metrics", {})
    base_metrics = {} if base is None else base[1]
    for k in sorted(m):
        if k.startswith("llmhpo_general/acc") or k == "val_loss":
            console.print(f"    [dim]{k}: {m[k]:.3f} (base {base_metrics[k]:.3f})[/]" if k in base_metrics
                          else f"    [dim]{k}: {m[k]:.3f}[/]")
    console.print(f"study:        {escape(cfg.study.storage)}  (llmhpo status {escape(str(out / 'demo.db'))})")
    console.print(f"best adapter: {escape(str(m.get('adapter_dir')))}")
    console.print(f"export:       llmhpo best {escape(str(out / 'demo.db'))} --export {escape(str(out / 'best'))} \\[--merge]")
    result = {"base": base_value, "best": best.value, "params": best.params, "minutes": summary.seconds / 60,
              "trials": summary.complete + summary.failed}
    (out / "demo-result.json").write_text(json.dumps(result, indent=1, default=str))
    return result
