"""Commands that run or check a study: run, check, demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from llmhpo._format import fmt
from llmhpo.cli._app import console, err, fail, say
from llmhpo.errors import ConfigError, LlmhpoError


def run(
    config: Path = typer.Argument(..., help="Study TOML file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a stored study whose config differs."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Override [budget] trials."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Override [runner] workers."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress",
        help="A progress bar, or one line per trial start and end. Default: a bar on a terminal, lines otherwise."),
    wait: bool = typer.Option(False, "--wait", help="If another driver runs this study, wait for it to end, "
                                                    "then resume (for queued cluster jobs); default: refuse."),
):
    """Run a study, or resume it: completed trials are kept, interrupted ones run again.

    One driver runs a study at a time: a second is refused (or waits, with --wait).
    Exits 1 when the study stopped on repeated identical failures or has no complete trial."""
    import time

    from llmhpo.config import load_config
    from llmhpo.lease import HEARTBEAT_EVERY, DriverBusy
    from llmhpo.runner import run as run_study

    overrides: dict = {}
    if trials is not None:
        overrides["budget"] = {"trials": trials}
    if workers is not None:
        overrides["runner"] = {"workers": workers}
    try:
        cfg = load_config(config, overrides)
        told = False
        while True:
            try:
                summary = run_study(cfg, overwrite=overwrite, progress=progress)
                break
            except DriverBusy as e:
                if not wait:
                    raise
                if not told:
                    err.print(f"waiting: {escape(str(e).split(';')[0])}", highlight=False, soft_wrap=True)
                    told = True
                time.sleep(HEARTBEAT_EVERY)
    except LlmhpoError as e:
        fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    stopped = summary.stopped
    if cfg.fidelity is not None and summary.resource_spent is not None and stopped == "budget":
        budget, spent = cfg.resource_budget(), summary.resource_spent
        left = budget - spent  # a promotion that does not fit ends the study: say so, or the rest looks lost
        why = f"the next {summary.unfit} does not fit" if summary.unfit else "the last run's next job did not fit"
        stopped += f" ({spent:g} of {budget:g} {cfg.fidelity.resource}" + (
            f"; {why} in the {left:g} left)" if left > 1e-9 else ")")
    say(f"study {summary.study} ({summary.storage}): {summary.complete} complete, {summary.failed} failed; "
        f"stopped by {stopped} after {summary.seconds:.1f} s")
    if summary.best_value is not None:
        say(f"best value {summary.best_value:.6g} (trial {summary.best_number}): "
            + ", ".join(f"{k}={fmt(v)}" for k, v in summary.best_params.items()))
    if summary.pareto is not None:
        hv = "" if summary.hypervolume is None else f", hypervolume {summary.hypervolume:.6g}"
        say(f"Pareto set: {len(summary.pareto)} trial(s){hv}; `llmhpo best` lists them")
    if summary.failure is not None:
        err.print(f"[bold red]error:[/] {escape(summary.failure)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if summary.complete == 0 and summary.failed:
        err.print(f"[bold red]error:[/] no trial completed; see the reasons with `llmhpo status {escape(str(config))}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def check(
    config: Path = typer.Argument(..., help="Study TOML file."),
    gpu_memory: Optional[list[float]] = typer.Option(
        None, "--gpu-memory", metavar="GIB",
        help="Check a fine-tuning study's memory estimate against a GPU of this many GiB (repeat for "
             "several) instead of the GPUs of this machine."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Check as `run --overwrite` would: a study stored "
                                   "under this name with another configuration is to be replaced, not an error."),
):
    """Validate a config and what it needs (storage, model, data, tasks, devices) without
    training or creating anything; lists every problem found. For a fine-tuning study, also
    estimates the peak GPU memory of its most demanding trial and says whether it fits."""
    from llmhpo.config import load_config
    from llmhpo.preflight import check_memory, preflight

    try:
        cfg = load_config(config)
        say(f"config OK: {cfg.study.name}, optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
            f"{cfg.space.dim} variables, budget {cfg.budget.trials} trials, "
            + (f"{cfg.runner.workers} worker(s)" if cfg.runner.workers else "as many workers as the Ray cluster fits")
            + (f" on Ray ({cfg.runner.address or 'a local cluster'})" if cfg.runner.executor == "ray" else ""))
        say(f"space: {cfg.space}")
        from llmhpo.optimizers import OPTIMIZERS
        from llmhpo.runner.resume import unused_data_note, unused_prior_note

        if (note := unused_prior_note(cfg)) is not None:
            say(note)
        if cfg.warm_from is not None and cfg.warm_from.use == "data" and not OPTIMIZERS[cfg.optimizer].takes_earlier:
            say(f"note: {unused_data_note(cfg.optimizer)}")
        if cfg.fidelity is not None:
            fd = cfg.fidelity
            say(f"fidelity: {fd.resource} rungs " + ", ".join(fmt(v) for v in fd.rungs())
                + f" ({fd.scheduler}, eta {fd.eta}); budget {cfg.resource_budget():.6g} {fd.resource}"
                + f"; model {fd.model}, promote by {fd.promote}")
        for g in gpu_memory or ():
            if not g > 0:
                raise ConfigError(f"--gpu-memory {g:g} must be a GPU's memory in GiB, e.g. --gpu-memory 24")
        memory_lines, memory_problems = check_memory(cfg, tuple(gpu_memory or ()))
        for line in memory_lines:
            say(line)
        for line in preflight(cfg, tuple(memory_problems), overwrite, stored=True):
            say(f"  {line}")
    except LlmhpoError as e:
        fail(e)
    console.print("[green]ready[/]")


def demo(
    trials: int = typer.Option(6, help="Trials in the demo study."),
    workers: int = typer.Option(1, help="Parallel workers (each loads its own model)."),
    out: Path = typer.Option(Path("llmhpo-runs/demo"), help="Folder for the study, the data and the best adapter."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the demo study afresh."),
    model: Optional[str] = typer.Option(None, "--model",
                                        help="Another model than the builtin SmolLM2: a local folder, GGUF file or hub id."),
):
    """Offline HPO of SmolLM2-135M on the project's own task, on CPU in about 10 minutes.
    Run it again to resume it, or with more --trials to extend it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from llmhpo.demo import run_demo

    if model is not None and Path(model).expanduser().exists():  # relative to here, not to --out
        model = str(Path(model).expanduser().resolve())
    try:
        run_demo(out, trials=trials, workers=workers, overwrite=overwrite, console=console, model=model)
    except LlmhpoError as e:
        fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: run `llmhpo demo` again to resume")
        raise typer.Exit(130)
