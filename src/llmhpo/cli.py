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

from llmhpo._format import fmt  # noqa: E402
from llmhpo._json import jsonable  # noqa: E402
from llmhpo.errors import ConfigError, LlmhpoError, did_you_mean  # noqa: E402

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
    # several problems found at once (before the first trial): one line each
    for msg in getattr(e, "problems", None) or [str(e).splitlines()[0] if str(e) else type(e).__name__]:
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
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    _say(f"study {summary.study} ({summary.storage}): {summary.complete} complete, {summary.failed} failed; "
         f"stopped by {summary.stopped} after {summary.seconds:.1f} s")
    if summary.best_value is not None:
        _say(f"best value {summary.best_value:.6g} (trial {summary.best_number}): "
             + ", ".join(f"{k}={fmt(v)}" for k, v in summary.best_params.items()))
    if summary.failure is not None:
        err.print(f"[bold red]error:[/] {escape(summary.failure)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if summary.complete == 0 and summary.failed:
        err.print(f"[bold red]error:[/] no trial completed; see the reasons with `llmhpo status {escape(str(config))}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _base_json(st) -> dict | None:
    base = st.base()
    return None if base is None else {"value": base[0], "metrics": base[1]}


def _say_base(st, best) -> None:
    """The base model's score beside the best trial's: did fine-tuning help, and by how much."""
    base = st.base()
    if base is None:
        return
    if best is None:
        _say(f"base model (no adapter): {base[0]:.6g}")
        return
    gain = best.value - base[0]
    if gain == 0:
        verdict = "the best trial equals it"
    else:
        better = gain > 0 if st.config.study.direction == "maximize" else gain < 0
        verdict = f"the best trial is {'better' if better else 'worse'} by {abs(gain):.6g}"
    _say(f"base model (no adapter): {base[0]:.6g}; {verdict}")


@app.command()
def status(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several."),
    last: int = typer.Option(10, "--last", help="How many recent trials to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole status as JSON (for scripts)."),
):
    """Trials done, failed and running, the driver and its workers, the best so far and the
    latest trials."""
    import time

    from llmhpo import lease

    try:
        st = _open_study(study, name)
    except LlmhpoError as e:
        _fail(e)
    c = st.counts()
    cfg = st.config
    best = st.best()
    records = st.records()
    row = lease.read(st.storage, cfg.study.name)
    alive = lease.alive(row)
    now = time.time()
    if as_json:
        def trial(r):
            return {"number": r.number, "state": "INTERRUPTED" if r.interrupted else r.state, "value": r.value,
                    "params": r.params, "error": r.attrs.get("error"), "metrics": r.attrs.get("metrics", {}),
                    "timings": r.attrs.get("timings", {}), "worker": r.attrs.get("worker"),
                    "intermediate": r.intermediate or None, "retries": r.attrs.get("retries", 0)}
        driver = None
        if row is not None:
            driver = {k: row.get(k) for k in ("host", "pid", "started", "heartbeat")}
            driver.update(alive=alive, running=bool(row.get("token")), heartbeat_age=now - float(row.get("heartbeat") or 0))
        out = {"study": cfg.study.name, "storage": cfg.study.storage, "optimizer": cfg.optimizer,
               "objective": cfg.kind.describe(cfg.objective), "direction": cfg.study.direction,
               "budget": {"trials": cfg.budget.trials, "resource": cfg.resource_budget()},
               "counts": c, "best": None if best is None else trial(best), "base": _base_json(st), "driver": driver,
               "workers": (row or {}).get("workers", []) if alive else [],
               "trials": [trial(r) for r in records]}
        print(json.dumps(jsonable(out), indent=1))
        return
    _say(f"study {cfg.study.name}: optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
         f"{cfg.study.direction}")
    if cfg.fidelity is None:
        _say(f"{c['COMPLETE']} complete, {c['FAIL']} failed, {c['RUNNING']} running, "
             f"{c['interrupted']} interrupted; budget {cfg.budget.trials}")
    else:
        fd = cfg.fidelity
        spent = sum(float(r.attrs.get("resource_spent", 0.0)) for r in records)
        _say(f"{c['COMPLETE']} complete (top rung), {c['PRUNED']} pruned, {c['WAITING']} waiting, {c['FAIL']} failed, "
             f"{c['RUNNING']} running, {c['interrupted']} interrupted")
        _say(f"{fd.resource}: {spent:.6g} spent of {cfg.resource_budget():.6g}; rungs "
             + ", ".join(fmt(v) for v in fd.rungs()) + f" ({fd.scheduler}, eta {fd.eta})")
    if row is not None and row.get("token"):
        if alive:
            _say(f"driver: running, {lease.describe(row, now)}")
        else:
            _say(f"driver: gone ({lease.describe(row, now)}); its running trials are rerun when the study resumes",
                 style="yellow")
    elif row is not None:
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(row.get("heartbeat") or 0)))
        _say(f"driver: none (the last run ended {ended})")
    if c.get("reevaluations"):
        _say(f"{c['reevaluations']} re-evaluation(s) of the best configurations ([study] reevaluate): "
             "the best is the best mean")
    if best and "evaluations" in best.attrs:
        _say(f"best mean {best.value:.6g} over {len(best.attrs['evaluations'])} evaluations (trial {best.number}: "
             + ", ".join(f"{v:.6g}" for v in best.attrs["evaluations"]) + ")")
    elif best:
        _say(f"best value {best.value:.6g} (trial {best.number})")
    _say_base(st, best)
    workers = (row or {}).get("workers") or []
    if alive and workers:
        wt = Table("worker", "host", "device", "trial", "elapsed", title="workers", title_justify="left")
        for i, w in enumerate(workers):
            since = w.get("since")
            wt.add_row(str(i), escape(str(w.get("host") or "-")), escape(str(w.get("device") or "-")),
                       "idle" if w.get("trial") is None else str(w["trial"]),
                       "" if not since or w.get("trial") is None else f"{now - float(since):.0f} s")
        console.print(wt)
    # one params column that wraps: readable at 80 columns, every name whole
    table = Table("trial", "state", "value", "params", "error", title="latest trials", title_justify="left")
    table.columns[3].overflow = "fold"
    table.columns[4].overflow = "fold"
    for r in records[-last:]:
        value = r.value
        if value is None and r.intermediate:  # multi-fidelity: the score at its highest rung
            value = r.intermediate[max(r.intermediate)]
        state = "INTERRUPTED" if r.interrupted else r.state
        if state == "RUNNING" and row is not None and not alive:
            state = "RUNNING (driver gone)"
        table.add_row(str(r.number), state,
                      "" if value is None else f"{value:.6g}" + (f" @{max(r.intermediate)}" if r.intermediate else ""),
                      escape(", ".join(f"{k}={fmt(v)}" for k, v in r.params.items())),
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
    if as_json:  # plain print: valid JSON on any terminal width, nothing else on stdout
        cfg = st.config
        metrics = {k: v for k, v in (b.attrs.get("metrics") or {}).items() if k != "traceback"}
        print(json.dumps(jsonable({"study": cfg.study.name, "storage": cfg.study.storage, "direction": cfg.study.direction,
                          "objective": cfg.kind.describe(cfg.objective), "number": b.number, "value": b.value,
                          "params": b.params, "metrics": metrics, "timings": b.attrs.get("timings", {}),
                          "adapter_dir": metrics.get("adapter_dir"), "base": _base_json(st),
                          "exported": None if export is None else str(where)}), indent=1))
        return
    else:
        _say(f"best trial {b.number}: value {b.value:.6g}")
        _say_base(st, b)
        for k, v in b.params.items():
            _say(f"  {k} = {fmt(v)}")
        for k, v in sorted((b.attrs.get("metrics") or {}).items()):
            if not isinstance(v, (list, dict)) and k != "traceback":
                _say(f"  {k}: {fmt(v, none='None')}", style="dim")
    if export is not None:
        _say(f"exported to {where}")


@app.command()
def report(
    studies: list[str] = typer.Argument(..., metavar="STUDY",
                                        help="Study TOML files, storage URLs or sqlite .db files; a storage holding "
                                             "several studies brings them all (or those --study names)."),
    names: Optional[list[str]] = typer.Option(None, "--study", metavar="NAME",
                                              help="Only the studies of this name (repeatable)."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.html, report.md and the figures."),
):
    """An HTML report of one or several studies (self-contained: open report.html from the
    folder or send it), the figures as PNG beside it, and report.md.

    Per study: the objective and best so far against trials and wall-clock time (with the
    base model's score), the other metrics, loss curves, each hyperparameter against the
    score, parameter importances, parallel coordinates, the top trials, the failures and
    where the time went. Several studies are first compared on the same axes."""
    from llmhpo.report import write_report

    try:
        opened = _open_studies(studies, names or [])
        path = write_report(opened, out)
    except LlmhpoError as e:
        _fail(e)
    _say(f"report of {len(opened)} stud{'y' if len(opened) == 1 else 'ies'} written to {path} "
         f"(figures and report.md beside it)")


def _open_studies(refs: list[str], names: list[str]) -> list:
    """The studies the ``report`` arguments name: a TOML file gives its study; a storage
    gives all its studies, or only those named with --study."""
    import optuna

    from llmhpo.config import load_config
    from llmhpo.study import Study, open_storage

    out, found = [], set()
    for ref in refs:
        if ref.endswith(".toml"):
            cfg = load_config(ref)
            url, wanted = cfg.study.storage, [cfg.study.name]
        else:
            if "://" not in ref and not Path(ref).exists():
                raise ConfigError(f"'{ref}' is neither a study TOML file, a storage URL nor an existing .db file")
            url = ref if "://" in ref else f"sqlite:///{Path(ref).resolve()}"
            db = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
            if db is not None and (not db.is_file() or db.stat().st_size == 0):  # opening would create it
                raise ConfigError(f"no study in {db}: the file does not exist or is empty; run "
                                  "`llmhpo run STUDY.toml` first, or check the path")
            try:
                wanted = optuna.get_all_study_names(storage=open_storage(url))
            except LlmhpoError:
                raise
            except Exception as e:
                raise ConfigError(f"cannot read the studies in {ref}: {e}") from e
            if names:
                wanted = [n for n in wanted if n in names]
        for n in wanted:
            found.add(n)
            out.append(Study.load(url, n))
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"no study named {', '.join(missing)} in {', '.join(refs)}")
    if not out:
        raise ConfigError(f"no study in {', '.join(refs)}; run `llmhpo run STUDY.toml` first")
    return out


@app.command()
def figures(
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for the PNG files."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stochastic optimisers (random, ILS, SA)."),
):
    """The algorithm gallery: each optimiser family's first evaluations on Himmelblau's
    function (grid vs random, ILS and SA paths, SOO / DIRECT / FDA partitions) and BO's
    Gaussian process on a 1-D function, drawn by llmhpo's own optimisers."""
    from llmhpo.figures import write_gallery

    try:
        paths = write_gallery(out, seed=seed)
    except LlmhpoError as e:
        _fail(e)
    for p in paths:
        _say(str(p))


@app.command()
def check(config: Path = typer.Argument(..., help="Study TOML file.")):
    """Validate a config and what it needs (storage, model, data, tasks, devices) without
    training or creating anything; lists every problem found."""
    from llmhpo.config import load_config
    from llmhpo.preflight import preflight

    try:
        cfg = load_config(config)
        _say(f"config OK: {cfg.study.name}, optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
             f"{cfg.space.dim} variables, budget {cfg.budget.trials} trials, "
             + (f"{cfg.runner.workers} worker(s)" if cfg.runner.workers else "as many workers as the Ray cluster fits")
             + (f" on Ray ({cfg.runner.address or 'a local cluster'})" if cfg.runner.executor == "ray" else ""))
        _say(f"space: {cfg.space}")
        if cfg.fidelity is not None:
            fd = cfg.fidelity
            _say(f"fidelity: {fd.resource} rungs " + ", ".join(fmt(v) for v in fd.rungs())
                 + f" ({fd.scheduler}, eta {fd.eta}); budget {cfg.resource_budget():.6g} {fd.resource}")
        for line in preflight(cfg):
            _say(f"  {line}")
    except LlmhpoError as e:
        _fail(e)
    console.print("[green]ready[/]")


@app.command()
def bench(
    optimizers: str = typer.Option("all", help="Comma-separated optimiser names, or 'all'; LABEL=NAME runs NAME "
                                   "under another label (ablations: 'bo,bo_rbf=bo' with --option bo_rbf.kernel=rbf)."),
    functions: str = typer.Option("branin,hartmann6,himmelblau", help="Comma-separated functions, or 'all'."),
    budget: int = typer.Option(50, help="Evaluations per run."),
    seeds: int = typer.Option(10, help="Repeats (seeds 0..S-1): each seed shifts the function's optimum."),
    workers: int = typer.Option(1, help="Parallel processes."),
    dim: Optional[int] = typer.Option(None, help="Dimension for functions defined in any dimension."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every run's history and the summary as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Also print the tables as Markdown."),
    batch: int = typer.Option(1, "--batch", help="Points asked at a time (q); evaluations are counted one by one."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="LABEL.KEY=VALUE, an optimiser option "
                                               "(repeatable), e.g. bo.n_init=5; VALUE is read as JSON, else text."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for convergence figures (one PNG per function)."),
    scheduler: Optional[str] = typer.Option(
        None, help="Multi-fidelity comparison: comma-separated schedulers (none, asha, sh, hyperband), each run "
                   "with every optimiser on the functions' learning curves; --budget counts full-fidelity trials."),
    optuna_pruners: str = typer.Option("hyperband,sh", help="With --scheduler: Optuna's TPE with these pruners "
                                       "(hyperband, sh) in the same run; empty for none."),
    fidelity: str = typer.Option("1:27:3", help="With --scheduler: MIN:MAX:ETA of the resource (steps)."),
    noise: float = typer.Option(0.02, help="With --scheduler: noise std as a fraction of the function's scale."),
):
    """Compare optimisers on benchmark functions with shifted optima: best regret at budgets
    10/25/50/100 (median, 95% CI, mean), mean rank, and a paired test against random search.

    With --scheduler, compare full-fidelity and multi-fidelity search on learning curves with
    a known final optimum: the resource each method needs to reach the regret that full-fidelity
    random search reaches with its whole budget."""
    from llmhpo.bench import (BUDGETS, Spec, markdown_table, overall, overall_markdown, plot_convergence,
                              run_bench, runs_to_json, summarise, vs_random_cell, vs_random_note)
    from llmhpo.objectives.functions import FUNCTION_NAMES, get_function
    from llmhpo.optimizers import OPTIMIZERS, check_optimizer

    if scheduler is not None:
        return _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                                    optuna_pruners, fidelity, noise)
    try:
        names = list(OPTIMIZERS) if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
        specs = []
        for item in names:
            label, _, name = item.rpartition("=")
            name = name.strip()
            check_optimizer(name)
            specs.append(Spec(label.strip() or name, name, {}))
        by_label = {sp.label: sp for sp in specs}
        if len(by_label) != len(specs):
            raise ConfigError(f"--optimizers {optimizers!r} uses a label twice; give each run a LABEL=NAME of its own")
        for item in option or []:
            key, eq, raw = item.partition("=")
            label, dot, opt_key = key.partition(".")
            if not eq or not dot or label not in by_label:
                raise ConfigError(f"--option {item!r} must be LABEL.KEY=VALUE with LABEL one of: {', '.join(by_label)}")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            by_label[label].options[opt_key] = value
        for sp in specs:
            check_optimizer(sp.optimizer, sp.options)
        fns = FUNCTION_NAMES if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        for f in fns:
            get_function(f, None)
        if budget < 1 or seeds < 1 or workers < 1 or batch < 1:
            raise ConfigError("--budget, --seeds, --workers and --batch must be at least 1")
    except LlmhpoError as e:
        _fail(e)
    from llmhpo.live import RunsProgress

    # a bar on a terminal, a line per run in a log (stderr: the tables go to stdout)
    with RunsProgress(err, len(specs) * len(fns) * seeds, lambda r: f"{r.optimizer} on {r.function}, seed {r.seed}: "
                      f"best regret {r.best_regret():.3g} in {r.seconds:.1f} s") as runs_done:
        rows = run_bench(specs, fns, budget, seeds, workers, dim, batch, on_row=runs_done)
    budgets = [b for b in BUDGETS if b < budget] + [budget]
    summaries = {b: summarise(rows, b) for b in budgets}
    summary = summaries[budget]
    # the 95% CI and the mean are in --markdown and --json: an 80-column terminal keeps one line per row
    table = Table("function", "optimizer", title=f"best regret after {budget} evaluations (batch {batch}), "
                                                f"{seeds} shifted seeds")
    for header in ("median regret", "mean rank", "vs random", "s/run"):
        table.add_column(header, no_wrap=True, justify="right")
    for s in summary:
        table.add_row(s["function"], s["optimizer"], f"{s['median_regret']:.3g}", f"{s['mean_rank']:.2f}",
                      vs_random_cell(s), f"{s['mean_seconds']:.1f}")
    console.print(table)
    if note := vs_random_note(summary):
        console.print(note, highlight=False)
    totals = overall(summary)
    table = Table("optimizer", "mean rank", "beats random on", "s/run", title="over all functions")
    for r in totals:
        table.add_row(r["optimizer"], f"{r['mean_rank']:.2f}", f"{r['better_than_random']}/{r['functions']}",
                      f"{r['mean_seconds']:.1f}")
    console.print(table)
    if markdown:
        for b in budgets:
            console.print(f"\nbudget {b}:\n", highlight=False)
            console.print(markdown_table(summaries[b]), highlight=False, soft_wrap=True)
            console.print("", highlight=False)
            console.print(overall_markdown(overall(summaries[b])), highlight=False, soft_wrap=True)
    if plots:
        for path in plot_convergence(rows, plots):
            err.print(f"wrote {path}")
    if json_out:
        json_out.write_text(json.dumps(jsonable({
            "protocol": "shifted optimum per seed (Function.shifted), ask/tell loop, one torch thread per run",
            "budget": budget, "batch": batch, "seeds": seeds, "functions": fns,
            "optimizers": [sp.__dict__ for sp in specs],
            "summary": summary, "overall": totals, "summary_by_budget": {str(b): summaries[b] for b in budgets},
            "runs": runs_to_json(rows)})))


def _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                         optuna_pruners, fidelity, noise) -> None:
    import dataclasses

    from llmhpo.bench import mf_markdown, run_mf_bench, summarise_mf
    from llmhpo.objectives.functions import get_function
    from llmhpo.objectives.synthetic import FunctionObjective
    from llmhpo.optimizers import check_optimizer
    from llmhpo.schedulers import SCHEDULERS

    try:
        opts = ["random", "bo"] if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
        fns = ["branin", "hartmann6"] if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        scheds = [s.strip() for s in scheduler.split(",") if s.strip()]
        for o in opts:
            check_optimizer(o)
        for s in scheds:
            if s != "none" and s not in SCHEDULERS:
                raise ConfigError(f"--scheduler {s!r} is unknown{did_you_mean(s, SCHEDULERS)}; "
                                  f"use none or one of: {', '.join(SCHEDULERS)}")
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
    from llmhpo.live import RunsProgress

    rows = []
    with RunsProgress(err, len(fns) * len(methods) * seeds, lambda r: f"{r.method} on {r.function}, seed {r.seed}: "
                      f"{len(r.trace)} full-fidelity trials in {r.seconds:.1f} s") as runs_done:
        for f in fns:  # noise relative to each function's own scale
            sigma = noise * FunctionObjective(f).scale()
            rows += run_mf_bench(methods, [f], budget, seeds, r_min, r_max, eta, sigma, workers, on_row=runs_done)
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
        json_out.write_text(json.dumps(jsonable({"budget_trials": budget, "seeds": seeds, "fidelity": fidelity,
                                                 "noise": noise, "summary": summary,
                                                 "runs": [dataclasses.asdict(r) for r in rows]}), indent=1))


@app.command()
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
