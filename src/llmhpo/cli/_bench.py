"""The ``bench`` command: optimisers compared on benchmark functions, at full fidelity or
with multi-fidelity schedulers on learning curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from llmhpo._json import jsonable
from llmhpo.cli._app import console, err, fail
from llmhpo.errors import ConfigError, LlmhpoError, did_you_mean


def bench(
    optimizers: str = typer.Option("all", help="Comma-separated optimiser names, or 'all'; LABEL=NAME runs NAME "
                                   "under another label (ablations: 'bo,bo_rbf=bo' with --option bo_rbf.kernel=rbf)."),
    functions: str = typer.Option("branin,hartmann6,himmelblau", help="Comma-separated functions, or 'all'."),
    budget: int = typer.Option(50, help="Evaluations per run."),
    seeds: int = typer.Option(10, help="Repeats (seeds 0..S-1): each seed shifts the function's optimum (not "
                              "lora_smollm2's: a recorded landscape; seeds vary the optimiser)."),
    workers: int = typer.Option(1, help="Parallel processes."),
    dim: Optional[int] = typer.Option(None, help="Dimension for functions defined in any dimension (the others "
                                      "keep their own)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every run's history and the summary as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Also print the tables as Markdown."),
    batch: int = typer.Option(1, "--batch", help="Points asked at a time (q); evaluations are counted one by one."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="LABEL.KEY=VALUE, an optimiser option "
                                               "(repeatable), e.g. bo.n_init=5; VALUE is read as JSON, else text."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for convergence figures (one PNG per function)."),
    scheduler: Optional[str] = typer.Option(
        None, help="Multi-fidelity comparison: comma-separated schedulers (none, asha, sh, hyperband), each run "
                   "with every optimiser on the functions' learning curves; --budget counts full-fidelity trials. "
                   "bo+all_rungs, bo+promote: [fidelity] model = \"all_rungs\", promote = \"model\"."),
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
    from llmhpo.lab.bench import BUDGETS, plot_convergence, run_bench, runs_to_json, summarise
    from llmhpo.objectives.functions import FUNCTION_NAMES, any_dimension, get_function, recorded

    if scheduler is not None:
        return _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                                    optuna_pruners, fidelity, noise)
    try:
        specs = _specs(optimizers, option or [])
        fns = FUNCTION_NAMES if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        for f in fns:
            get_function(f, None)
        if dim is not None and not any(any_dimension(f) for f in fns):
            raise ConfigError(f"--dim {dim}: none of {', '.join(fns)} is defined in any dimension; drop --dim")
        if dim is not None:
            get_function(next(f for f in fns if any_dimension(f)), dim)  # a bad dim, now
        if budget < 1 or seeds < 1 or workers < 1 or batch < 1:
            raise ConfigError("--budget, --seeds, --workers and --batch must be at least 1")
    except LlmhpoError as e:
        fail(e)
    from llmhpo.live import RunsProgress

    # a bar on a terminal, a line per run in a log (stderr: the tables go to stdout)
    with RunsProgress(err, len(specs) * len(fns) * seeds, lambda r: f"{r.optimizer} on {r.function}, seed {r.seed}: "
                      f"best regret {r.best_regret():.3g} in {r.seconds:.1f} s") as runs_done:
        rows = run_bench(specs, fns, budget, seeds, workers, dim, batch, on_row=runs_done)
    budgets = [b for b in BUDGETS if b < budget] + [budget]
    summaries = {b: summarise(rows, b) for b in budgets}
    summary = summaries[budget]
    seeds_are = f"{seeds} {'shifted ' if not any(map(recorded, fns)) else ''}seed{'s' if seeds > 1 else ''}"
    totals = _print_tables(summaries, budget, batch, seeds_are, markdown)
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


def _specs(optimizers: str, option: list[str]) -> list:
    """The runs ``--optimizers`` and ``--option`` ask for, each optimiser and option checked
    (``llmhpo.lab.bench.Spec``: a label, the optimiser's name, its options)."""
    from llmhpo.lab.bench import Spec
    from llmhpo.optimizers import OPTIMIZERS, check_optimizer

    names = list(OPTIMIZERS) if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
    specs = []
    for item in names:
        label, _, name = item.rpartition("=")
        name = name.strip()
        if "+" in name:  # a multi-fidelity method's suffix (bo+all_rungs)
            raise ConfigError(f"--optimizers {item!r}: +{name.partition('+')[2]} models rungs; add --scheduler asha "
                              "(or sh, hyperband) for a multi-fidelity bench")
        check_optimizer(name)
        specs.append(Spec(label.strip() or name, name, {}))
    by_label = {sp.label: sp for sp in specs}
    if len(by_label) != len(specs):
        raise ConfigError(f"--optimizers {optimizers!r} uses a label twice; give each run a LABEL=NAME of its own")
    for item in option:
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
    return specs


def _print_tables(summaries: dict[int, list[dict]], budget: int, batch: int, seeds: str, markdown: bool) -> list:
    """The regret table at the full budget and the ranks over all functions (with --markdown,
    both at every budget); returns the overall ranks at the full budget."""
    from llmhpo.lab.bench import markdown_table, overall, overall_markdown, vs_random_cell, vs_random_note

    summary = summaries[budget]
    # the 95% CI and the mean are in --markdown and --json: an 80-column terminal keeps one line per row
    table = Table("function", "optimizer", title=f"best regret after {budget} evaluations (batch {batch}), "
                                                f"{seeds}")
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
    with_random = any(s["optimizer"] == "random" for s in summary)
    for r in totals:
        table.add_row(r["optimizer"], f"{r['mean_rank']:.2f}",
                      f"{r['better_than_random']}/{r['functions']}" if with_random else "- (no random run)",
                      f"{r['mean_seconds']:.1f}")
    console.print(table)
    if markdown:
        for b in summaries:
            console.print(f"\nbudget {b}:\n", highlight=False)
            console.print(markdown_table(summaries[b]), highlight=False, soft_wrap=True)
            console.print("", highlight=False)
            console.print(overall_markdown(overall(summaries[b])), highlight=False, soft_wrap=True)
    return totals


def _bench_multifidelity(optimizers, functions, budget, seeds, workers, json_out, markdown, scheduler,
                         optuna_pruners, fidelity, noise) -> None:
    import dataclasses

    from llmhpo.lab.bench import MF_OPTIONS, mf_markdown, run_mf_bench, summarise_mf
    from llmhpo.objectives.functions import check_rungs, get_function
    from llmhpo.objectives.synthetic import FunctionObjective
    from llmhpo.optimizers import check_optimizer
    from llmhpo.schedulers import SCHEDULERS

    try:
        opts = ["random", "bo"] if optimizers == "all" else [o.strip() for o in optimizers.split(",") if o.strip()]
        fns = ["branin", "hartmann6"] if functions == "all" else [f.strip() for f in functions.split(",") if f.strip()]
        scheds = [s.strip() for s in scheduler.split(",") if s.strip()]
        for o in opts:
            name, *suffixes = o.split("+")
            check_optimizer(name)
            if suffixes and (name != "bo" or not set(suffixes) <= set(MF_OPTIONS)):
                raise ConfigError(f"--optimizers {o!r}: OPTIMIZER+SUFFIX takes +{' and +'.join(MF_OPTIONS)} (a GP of "
                                  "every rung's scores), with bo only: e.g. bo+all_rungs")
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
            check_rungs(f, r_min, r_max, "--fidelity MIN")
        if budget < 1 or seeds < 1 or workers < 1 or noise < 0:
            raise ConfigError("--budget, --seeds and --workers must be at least 1, --noise at least 0")
        if set(scheds) == {"none"} and any("+" in o for o in opts):
            raise ConfigError("--scheduler none has no rungs for +all_rungs or +promote to model; add asha, sh or "
                              "hyperband to --scheduler")
    except LlmhpoError as e:
        fail(e)
    # full fidelity has no rungs to model: beside a scheduler, "bo+all_rungs" runs there as "bo"
    methods = list(dict.fromkeys(o.partition("+")[0] if s == "none" else f"{s}:{o}" for s in scheds for o in opts))
    methods += [f"optuna:{p}" for p in pruners]
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
    table = Table(title=f"{budget} full-fidelity trials of resource, rungs {fidelity}, {seeds} seeds")
    # names never cut ("asha:bo+all_rungs" and "asha:bo+promote" differ at their ends); the numbers fold
    table.add_column("function", no_wrap=True, min_width=max(len(f) for f in fns))
    table.add_column("method", no_wrap=True, min_width=max(len(m) for m in methods))
    for header in ("median final regret", "budget to random's best", "reached", "s/run"):
        table.add_column(header, justify="right", overflow="fold")
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
