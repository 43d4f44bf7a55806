"""The ``llmhpo`` command line: run, status, best, report, bench, check, demo.

Errors llmhpo raises on purpose print one line and exit with status 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

# lm-eval and datasets draw a tqdm bar per task and split; the study's own progress bar
# says what matters (set TQDM_DISABLE=0 to see them)
os.environ.setdefault("TQDM_DISABLE", "1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from llmhpo.errors import ConfigError, LlmhpoError  # noqa: E402

# rich_markup_mode=None: help texts name TOML tables such as [budget], which rich markup would eat
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Hyperparameter optimisation for LLM fine-tuning (LoRA + lm-eval).")
console = Console()
err = Console(stderr=True)
_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _STATE["debug"] = debug


def _fail(e: BaseException) -> None:
    if _STATE["debug"]:
        raise e
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _open_study(ref: str, name: Optional[str]):
    from llmhpo.config import load_config
    from llmhpo.study import Study

    if ref.endswith(".toml"):
        cfg = load_config(ref)
        return Study.load(cfg.study.storage, name or cfg.study.name)
    if "://" in ref:
        return Study.load(ref, name)
    if not Path(ref).exists():
        raise ConfigError(f"'{ref}' is neither a study TOML file, a storage URL nor an existing .db file")
    return Study.load(f"sqlite:///{ref}", name)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _say(text: str, style: str | None = None) -> None:
    """Print user text (params, reasons, paths) as is: never read as rich markup."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Study TOML file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a stored study whose config differs."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Override [budget] trials."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Override [runner] workers."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress",
        help="A progress bar, or one line per trial start and end. Default: a bar on a terminal, lines otherwise."),
):
    """Run a study, or resume it: completed trials are kept, interrupted ones run again.

    Exits 1 when the study stopped on repeated identical failures or has no complete trial."""
    from llmhpo.config import load_config
    from llmhpo.runner import run as run_study

    overrides: dict = {}
    if trials is not None:
        overrides["budget"] = {"trials": trials}
    if workers is not None:
        overrides["runner"] = {"workers": workers}
    try:
        cfg = load_config(config, overrides)
        summary = run_study(cfg, overwrite=overwrite, progress=progress)
    except LlmhpoError as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    _say(f"study {summary.study} ({summary.storage}): {summary.complete} complete, {summary.failed} failed; "
         f"stopped by {summary.stopped} after {summary.seconds:.1f} s")
    if summary.best_value is not None:
        _say(f"best value {summary.best_value:.6g} (trial {summary.best_number}): "
             + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.best_params.items()))
    if summary.failure is not None:
        err.print(f"[bold red]error:[/] {escape(summary.failure)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if summary.complete == 0 and summary.failed:
        err.print(f"[bold red]error:[/] no trial completed; see the reasons with `llmhpo status {escape(str(config))}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def status(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several."),
    last: int = typer.Option(10, "--last", help="How many recent trials to list."),
):
    """Trials done, failed and running, the best so far and the latest trials."""
    try:
        st = _open_study(study, name)
    except LlmhpoError as e:
        _fail(e)
    c = st.counts()
    cfg = st.config
    best = st.best()
    _say(f"study {cfg.study.name}: optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
         f"{cfg.study.direction}")
    if cfg.fidelity is None:
        _say(f"{c['COMPLETE']} complete, {c['FAIL']} failed, {c['RUNNING']} running, "
             f"{c['interrupted']} interrupted; budget {cfg.budget.trials}")
    else:
        fd = cfg.fidelity
        spent = sum(float(r.attrs.get("resource_spent", 0.0)) for r in st.records())
        _say(f"{c['COMPLETE']} complete (top rung), {c['PRUNED']} pruned, {c['WAITING']} waiting, {c['FAIL']} failed, "
             f"{c['RUNNING']} running, {c['interrupted']} interrupted")
        _say(f"{fd.resource}: {spent:.6g} spent of {cfg.resource_budget():.6g}; rungs "
             + ", ".join(_fmt(v) for v in fd.rungs()) + f" ({fd.scheduler}, eta {fd.eta})")
    if best:
        _say(f"best value {best.value:.6g} (trial {best.number})")
    table = Table("trial", "state", "value", *cfg.space.names, "error")
    for r in st.records()[-last:]:
        value = r.value
        if value is None and r.intermediate:  # multi-fidelity: the score at its highest rung
            value = r.intermediate[max(r.intermediate)]
        table.add_row(str(r.number), "INTERRUPTED" if r.interrupted else r.state,
                      "" if value is None else f"{value:.6g}" + (f" @{max(r.intermediate)}" if r.intermediate else ""),
                      *(escape(_fmt(r.params.get(n, ""))) for n in cfg.space.names),
                      escape(r.attrs.get("error") or ""))
    console.print(table)


@app.command()
def best(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write the best trial's adapter and config here."),
    merge: bool = typer.Option(False, "--merge", help="With --export: also write the base model with the adapter merged."),
    as_json: bool = typer.Option(False, "--json", help="Print the best trial as JSON."),
):
    """The best trial: value, params, metrics; optionally export its adapter."""
    try:
        st = _open_study(study, name)
        b = st.best()
        if b is None:
            raise LlmhpoError(f"study '{st.config.study.name}' has no complete trial yet")
        if export is not None:
            cfg = st.config
            where = cfg.kind.export(cfg.objective, b, export, merge=merge)
            (where / "study.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    except LlmhpoError as e:
        _fail(e)
    if as_json:
        console.print_json(json.dumps({"number": b.number, "value": b.value, "params": b.params,
                                       "metrics": b.attrs.get("metrics", {})}, default=str))
    else:
        _say(f"best trial {b.number}: value {b.value:.6g}")
        for k, v in b.params.items():
            _say(f"  {k} = {_fmt(v)}")
        for k, v in sorted((b.attrs.get("metrics") or {}).items()):
            if not isinstance(v, (list, dict)) and k != "traceback":
                _say(f"  {k}: {_fmt(v)}", style="dim")
    if export is not None:
        _say(f"exported to {where}")


@app.command()
def report(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for the figures and the summary."),
):
    """Figures (best-so-far curve, parameter vs value) and a Markdown summary of a study."""
    from llmhpo.report import write_report

    try:
        st = _open_study(study, name)
        path = write_report(st, out)
    except LlmhpoError as e:
        _fail(e)
    console.print(f"report written to {path}")


@app.command()
def check(config: Path = typer.Argument(..., help="Study TOML file.")):
    """Validate a config and what it needs (model, data, tasks, devices) without training."""
    from llmhpo.config import load_config

    try:
        cfg = load_config(config)
        _say(f"config OK: {cfg.study.name}, optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
             f"{cfg.space.dim} variables, budget {cfg.budget.trials} trials, {cfg.runner.workers} worker(s)")
        _say(f"space: {cfg.space}")
        _say(f"study: {cfg.study.storage}")
        if cfg.fidelity is not None:
            fd = cfg.fidelity
            _say(f"fidelity: {fd.resource} rungs " + ", ".join(_fmt(v) for v in fd.rungs())
                 + f" ({fd.scheduler}, eta {fd.eta}); budget {cfg.resource_budget():.6g} {fd.resource}")
        for line in cfg.kind.preflight(cfg.objective, cfg.space, cfg.runner.devices, cfg.fidelity):
            _say(f"  {line}")
    except LlmhpoError as e:
        _fail(e)
    console.print("[green]ready[/]")


@app.command()
def bench(
    optimizers: str = typer.Option("all", help="Comma-separated optimiser names, or 'all'."),
    functions: str = typer.Option("branin,hartmann6,himmelblau", help="Comma-separated functions, or 'all'."),
    budget: int = typer.Option(50, help="Evaluations per run."),
    seeds: int = typer.Option(10, help="Repeats (seeds 0..S-1)."),
    workers: int = typer.Option(1, help="Parallel processes."),
    dim: Optional[int] = typer.Option(None, help="Dimension for functions defined in any dimension."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every run and the summary as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Also print the table as Markdown."),
    scheduler: Optional[str] = typer.Option(
        None, help="Multi-fidelity comparison: comma-separated schedulers (none, asha, sh, hyperband), each run "
                   "with every optimiser on the functions' learning curves; --budget counts full-fidelity trials."),
    optuna_pruners: str = typer.Option("hyperband,sh", help="With --scheduler: Optuna's TPE with these pruners "
                                       "(hyperband, sh) in the same run; empty for none."),
    fidelity: str = typer.Option("1:27:3", help="With --scheduler: MIN:MAX:ETA of the resource (steps)."),
    noise: float = typer.Option(0.02, help="With --scheduler: noise std as a fraction of the function's scale."),
):
    """Compare optimisers on benchmark functions: median/mean best regret and mean rank.

    With --scheduler, compare full-fidelity and multi-fidelity search on learning curves with
    a known final optimum: the resource each method needs to reach the regret that full-fidelity
    random search reaches with its whole budget."""
    from llmhpo.bench import markdown_table, run_bench, summarise
    from llmhpo.objectives.functions import FUNCTION_NAMES, get_function
    from llmhpo.optimizers import OPTIMIZERS

    if scheduler is not None:
        return _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                                    optuna_pruners, fidelity, noise)
    try:
        opts = list(OPTIMIZERS) if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
        fns = FUNCTION_NAMES if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        for o in opts:
            if o not in OPTIMIZERS:
                raise ConfigError(f"unknown optimizer {o!r}; choose from: {', '.join(OPTIMIZERS)}")
        for f in fns:
            get_function(f, None)
        if budget < 1 or seeds < 1 or workers < 1:
            raise ConfigError("--budget, --seeds and --workers must be at least 1")
    except LlmhpoError as e:
        _fail(e)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as p:
        task = p.add_task("bench", total=len(opts) * len(fns) * seeds)
        rows = run_bench(opts, fns, budget, seeds, workers, dim, on_row=lambda r: p.advance(task))
    summary = summarise(rows)
    table = Table("function", "optimizer", "median regret", "mean regret", "mean rank", "s/run",
                  title=f"best regret after {budget} evaluations, {seeds} seeds")
    for s in summary:
        table.add_row(s["function"], s["optimizer"], f"{s['median_regret']:.3g}", f"{s['mean_regret']:.3g}",
                      f"{s['mean_rank']:.2f}", f"{s['mean_seconds']:.1f}")
    console.print(table)
    if markdown:
        console.print(markdown_table(summary), highlight=False, soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps({"budget": budget, "seeds": seeds, "summary": summary,
                                        "runs": [r.__dict__ for r in rows]}, indent=1))


def _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                         optuna_pruners, fidelity, noise) -> None:
    import dataclasses

    from llmhpo.bench import mf_markdown, run_mf_bench, summarise_mf
    from llmhpo.objectives.functions import get_function
    from llmhpo.objectives.synthetic import FunctionObjective
    from llmhpo.optimizers import OPTIMIZERS
    from llmhpo.schedulers import SCHEDULERS

    try:
        opts = ["random", "bo"] if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
        fns = ["branin", "hartmann6"] if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        scheds = [s.strip() for s in scheduler.split(",") if s.strip()]
        for o in opts:
            if o not in OPTIMIZERS:
                raise ConfigError(f"unknown optimizer {o!r}; choose from: {', '.join(OPTIMIZERS)}")
        for s in scheds:
            if s != "none" and s not in SCHEDULERS:
                raise ConfigError(f"--scheduler {s!r} is unknown; use none or one of: {', '.join(SCHEDULERS)}")
        pruners = [p.strip() for p in optuna_pruners.split(",") if p.strip()]
        for p in pruners:
            if p not in ("hyperband", "sh"):
                raise ConfigError(f"--optuna-pruners {p!r} is unknown; use hyperband and/or sh")
        try:
            parts = [float(v) for v in fidelity.split(":")]
            r_min, r_max, eta = parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 3
        except (ValueError, IndexError):
            raise ConfigError(f"--fidelity {fidelity!r} must be MIN:MAX[:ETA], e.g. 1:27:3") from None
        if not 0 < r_min < r_max or eta < 2:
            raise ConfigError(f"--fidelity {fidelity!r} needs 0 < MIN < MAX and ETA >= 2")
        for f in fns:
            get_function(f, None)
        if budget < 1 or seeds < 1 or workers < 1 or noise < 0:
            raise ConfigError("--budget, --seeds and --workers must be at least 1, --noise at least 0")
    except LlmhpoError as e:
        _fail(e)
    methods = [o if s == "none" else f"{s}:{o}" for s in scheds for o in opts] + [f"optuna:{p}" for p in pruners]
    if "random" not in methods:
        methods.insert(0, "random")  # the reference every method is measured against
    from rich.progress import Progress

    rows = []
    with Progress(console=err, transient=True) as p:
        task = p.add_task("bench", total=len(fns) * len(methods) * seeds)
        for f in fns:  # noise relative to each function's own scale
            sigma = noise * FunctionObjective(f).scale()
            rows += run_mf_bench(methods, [f], budget, seeds, r_min, r_max, eta, sigma, workers,
                                 on_row=lambda r: p.advance(task))
    summary = summarise_mf(rows)
    table = Table("function", "method", "median final regret", "budget to reach random's best", "reached", "s/run",
                  title=f"{budget} full-fidelity trials of resource, rungs {fidelity}, {seeds} seeds")
    for s in summary:
        frac = s["median_fraction_to_reach"]
        table.add_row(s["function"], s["method"], f"{s['median_final_regret']:.3g}",
                      "never" if frac != frac or frac == float("inf") else f"{frac:.0%}",
                      f"{s['reached']}/{s['seeds']}", f"{s['mean_seconds']:.1f}")
    console.print(table)
    if markdown:
        console.print(mf_markdown(summary, "random"), highlight=False, soft_wrap=True)
        if "bo" in methods:
            console.print(mf_markdown(summarise_mf(rows, "bo"), "bo"), highlight=False, soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps({"budget_trials": budget, "seeds": seeds, "fidelity": fidelity, "noise": noise,
                                        "summary": summary, "runs": [dataclasses.asdict(r) for r in rows]},
                                       indent=1, default=str))


@app.command()
def demo(
    trials: int = typer.Option(6, help="Trials in the demo study."),
    workers: int = typer.Option(1, help="Parallel workers (each loads its own model)."),
    out: Path = typer.Option(Path("llmhpo-runs/demo"), help="Folder for the study, the data and the best adapter."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the demo study afresh."),
):
    """Offline HPO of SmolLM2-135M on the project's own task, on CPU in about 10 minutes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from llmhpo.demo import run_demo

    try:
        run_demo(out, trials=trials, workers=workers, overwrite=overwrite, console=console)
    except LlmhpoError as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: run `llmhpo demo` again to resume")
        raise typer.Exit(130)


def main() -> None:
    try:
        app()
    except typer.Exit:
        raise
    except LlmhpoError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {escape(str(e))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
