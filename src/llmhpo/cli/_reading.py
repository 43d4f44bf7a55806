"""Commands that read a study: status, best."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from llmhpo._format import fmt
from llmhpo._json import jsonable
from llmhpo.cli._app import console, fail, open_study, say
from llmhpo.cli._pareto import chosen, constraints_json, pareto_json, picked, print_front, say_status
from llmhpo.errors import LlmhpoError, SeveralStudies


def _base_json(st) -> dict | None:
    base = st.base()
    return None if base is None else {"value": base[0], "metrics": base[1]}


def _say_base(st, best) -> None:
    """The base model's score beside the best trial's: did fine-tuning help, and by how much."""
    base = st.base()
    if base is None:
        return
    if best is None:
        say(f"base model (no adapter): {base[0]:.6g}")
        return
    gain = best.value - base[0]
    if gain == 0:
        verdict = "the best trial equals it"
    else:
        better = gain > 0 if st.config.study.direction == "maximize" else gain < 0
        verdict = f"the best trial is {'better' if better else 'worse'} by {abs(gain):.6g}"
    say(f"base model (no adapter): {base[0]:.6g}; {verdict}")


def status(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several "
                                       "(without it: one line per study)."),
    last: int = typer.Option(10, "--last", help="How many recent trials to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole status as JSON (for scripts)."),
):
    """Trials done, failed and running, the driver and its workers, the best so far and the
    latest trials; for a storage that holds several studies, one line per study."""
    import time

    from llmhpo import lease

    try:
        st = open_study(study, name)
    except SeveralStudies as e:
        _overview(study, e.storage_url, e.names, as_json)
        return
    except LlmhpoError as e:
        fail(e)
    c = st.counts()
    best = st.best()
    records = st.records()
    row = st.driver()
    alive = lease.alive(row)
    now = time.time()
    if as_json:
        print(json.dumps(jsonable(_status_json(st, c, best, records, row, alive, now)), indent=1))
        return
    _say_counts(st.config, c, records)
    if st.warm_start():
        from llmhpo.transfer import describe

        say("warm start from " + describe(st.warm_start()))
    _say_driver(row, alive, now)
    if c.get("reevaluations"):
        say(f"{c['reevaluations']} re-evaluation(s) of the best configurations ([study] reevaluate): "
            "the best is the best mean")
    if best and "evaluations" in best.attrs:
        say(f"best mean {best.value:.6g} over {len(best.attrs['evaluations'])} evaluations (trial {best.number}: "
            + ", ".join(f"{v:.6g}" for v in best.attrs["evaluations"]) + ")")
    elif best and not st.config.study.objectives:
        say(f"best value {best.value:.6g} (trial {best.number})")
    say_status(st, records)
    if not st.config.study.objectives:
        _say_base(st, best)
    workers = (row or {}).get("workers") or []
    if alive and workers:
        console.print(_workers_table(workers, now))
    console.print(_trials_table(records[-last:], driver_gone=row is not None and not alive))


def _overview(ref: str, url: str, names: list[str], as_json: bool) -> None:
    """``status`` of a storage that holds several studies: each one's optimiser, goal, trials
    by state, best value and driver, in one row; a study not made by llmhpo says so."""
    from llmhpo import lease
    from llmhpo.study import Study

    rows = []
    for n in names:
        try:
            st = Study.load(url, n)
        except LlmhpoError as e:
            rows.append({"study": n, "error": str(e)})
            continue
        cfg, best, driver = st.config, st.best(), st.driver()
        one = best is not None and not cfg.study.objectives
        rows.append({"study": n, "optimizer": cfg.optimizer,
                     "goal": _goal(cfg),
                     "counts": st.counts(), "best": best.value if one else None, "best_trial": best.number if one else None,
                     **({"pareto_trials": [t.number for t in st.pareto()]} if cfg.study.objectives else {}),
                     "driver_running": bool(driver and driver.get("token") and lease.alive(driver))})
    if as_json:
        print(json.dumps(jsonable({"storage": url, "studies": rows}), indent=1))
        return
    table = Table("study", "optimizer", "trials", "best", "driver", title=f"{len(names)} studies in {url}",
                  title_justify="left")
    for column in table.columns:
        column.overflow = "fold"  # every name whole
    states = (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("WAITING", "waiting"), ("FAIL", "failed"),
              ("RUNNING", "running"))
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["study"]), "", escape(r["error"]), "", "")
            continue
        c = r["counts"]
        trials = ", ".join(f"{c[k]} {word}" for k, word in states if c[k] or k == "COMPLETE")
        best = "-" if r["best"] is None else f"{r['best']:.6g} (trial {r['best_trial']}, {r['goal']})"
        if r.get("pareto_trials"):
            best = f"{len(r['pareto_trials'])} trials on the Pareto set ({r['goal']})"
        table.add_row(escape(r["study"]), r["optimizer"], trials, best, "running" if r["driver_running"] else "none")
    console.print(table)
    say(f"one study in full: llmhpo status {ref} --study NAME")


def _cut_short(r) -> int | None:
    """The rung a multi-fidelity configuration's job was at when a stop cut it short (it waits
    to go on from its checkpoint); None for any other trial."""
    return r.attrs.get("cut_short_rung") if r.state == "WAITING" else None


def _trial_json(r) -> dict:
    return {"number": r.number, "state": "INTERRUPTED" if r.interrupted else r.state, "value": r.value,
            **({"cut_short_rung": k} if (k := _cut_short(r)) is not None else {}),
            **({"values": r.values} if r.values is not None else {}),
            **({"constraints": r.constraints, "feasible": r.feasible} if r.constraints is not None else {}),
            "params": r.params, "error": r.attrs.get("error"), "metrics": r.attrs.get("metrics", {}),
            "timings": r.attrs.get("timings", {}), "worker": r.attrs.get("worker"), "rung_workers": r.attrs.get("rung_workers"),
            "intermediate": r.intermediate or None, "retries": r.attrs.get("retries", 0)}


def _status_json(st, c: dict, best, records: list, row: dict | None, alive: bool, now: float) -> dict:
    """``status --json``: the study, its counts, driver, workers and every trial."""
    cfg = st.config
    driver = None
    if row is not None:
        driver = {k: row.get(k) for k in ("host", "pid", "started", "heartbeat")}
        driver.update(alive=alive, running=bool(row.get("token")), heartbeat_age=now - float(row.get("heartbeat") or 0))
    return {"study": cfg.study.name, "storage": cfg.study.storage, "optimizer": cfg.optimizer,
            "objective": cfg.kind.describe(cfg.objective), "direction": cfg.study.direction,
            "budget": {"trials": cfg.budget.trials, "resource": cfg.resource_budget()},
            "counts": c, "best": None if best is None or cfg.study.objectives else _trial_json(best),
            **(pareto_json(st) if cfg.study.objectives else {}),
            **({"constraints": constraints_json(st, records)} if cfg.constraints else {}),
            "base": _base_json(st), "warm_start_from": st.warm_start(), "driver": driver,
            "workers": (row or {}).get("workers", []) if alive else [],
            "trials": [_trial_json(r) for r in records]}


def _goal(cfg) -> str:
    """What the study optimises: its direction, or each objective's metric and direction."""
    return ", ".join(f"{o.metric} {o.direction}" for o in cfg.study.objectives) or cfg.study.direction


def _say_counts(cfg, c: dict, records: list) -> None:
    """The study in one line, then its trials by state against the budget."""
    say(f"study {cfg.study.name}: optimizer {cfg.optimizer}, objective {cfg.kind.describe(cfg.objective)}, "
        f"{_goal(cfg)}")
    if cfg.fidelity is None:
        say(f"{c['COMPLETE']} complete, {c['FAIL']} failed, {c['RUNNING']} running, "
            f"{c['interrupted']} interrupted; budget {cfg.budget.trials}")
    else:
        fd = cfg.fidelity
        spent = sum(float(r.attrs.get("resource_spent", 0.0)) for r in records)
        cut = sum(_cut_short(r) is not None for r in records)
        say(f"{c['COMPLETE']} complete (top rung), {c['PRUNED']} pruned, {c['WAITING']} waiting"
            + (f" ({cut} cut short by a stop: a resume goes on from their checkpoints)" if cut else "")
            + f", {c['FAIL']} failed, {c['RUNNING']} running, {c['interrupted']} interrupted")
        say(f"{fd.resource}: {spent:.6g} spent of {cfg.resource_budget():.6g}; rungs "
            + ", ".join(fmt(v) for v in fd.rungs()) + f" ({fd.scheduler}, eta {fd.eta}); model {fd.model}, "
            f"promote by {fd.promote}")


def _say_driver(row: dict | None, alive: bool, now: float) -> None:
    """Whether a driver runs the study, is gone, or when the last run ended."""
    import time

    from llmhpo import lease

    if row is not None and row.get("token"):
        if alive:
            say(f"driver: running, {lease.describe(row, now)}")
        else:
            say(f"driver: gone ({lease.describe(row, now)}); its running trials are rerun when the study resumes",
                style="yellow")
    elif row is not None:
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(row.get("heartbeat") or 0)))
        say(f"driver: none (the last run ended {ended})")


def _workers_table(workers: list[dict], now: float) -> Table:
    wt = Table("worker", "host", "GPUs", "trial", "elapsed", title="workers", title_justify="left")
    for i, w in enumerate(workers):
        since = w.get("since")
        wt.add_row(str(i), escape(str(w.get("host") or "-")), escape(str(w.get("device") or "-")),
                   "idle" if w.get("trial") is None else str(w["trial"]),
                   "" if not since or w.get("trial") is None else f"{now - float(since):.0f} s")
    return wt


def _trials_table(records: list, driver_gone: bool) -> Table:
    """The latest trials; a RUNNING trial whose driver is gone says so."""
    # one params column that wraps: readable at 80 columns, every name whole
    memory = any("peak_memory_mb" in (r.attrs.get("metrics") or {}) for r in records)
    table = Table("trial", "state", "value", *["peak MiB"] * memory, "params", "error", title="latest trials",
                  title_justify="left")
    table.columns[-2].overflow = "fold"
    table.columns[-1].overflow = "fold"
    for r in records:
        value = r.value
        if value is None and r.intermediate:  # multi-fidelity: the score at its highest rung
            value = r.intermediate[max(r.intermediate)]
        state = "INTERRUPTED" if r.interrupted else r.state
        if _cut_short(r) is not None:  # waiting to go on from its checkpoint
            state = "CUT SHORT"
        if r.constraints is not None and state == "COMPLETE" and not r.feasible:
            state = "COMPLETE (infeasible)"
        if state == "RUNNING" and driver_gone:
            state = "RUNNING (driver gone)"
        peak = (r.attrs.get("metrics") or {}).get("peak_memory_mb")  # the GPU's on CUDA, the resident set's on CPU
        shown = "" if value is None else ", ".join(f"{v:.6g}" for v in r.values) if r.values else f"{value:.6g}"
        table.add_row(str(r.number), state, shown + (f" @{max(r.intermediate)}" if r.intermediate and shown else ""),
                      *["" if peak is None else f"{peak:.0f}"] * memory,
                      escape(", ".join(f"{k}={fmt(v)}" for k, v in r.params.items())),
                      escape(r.attrs.get("error") or ""))
    return table


def best(
    study: str = typer.Argument(..., help="Study TOML file, storage URL, or sqlite .db file."),
    name: Optional[str] = typer.Option(None, "--study", help="Study name, when the storage holds several."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write the best trial's adapter and config here."),
    merge: bool = typer.Option(False, "--merge", help="With --export: also write the base model with the adapter merged."),
    as_json: bool = typer.Option(False, "--json", help="Print the best trial (several objectives: the Pareto set) "
                                 "as JSON."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Show or export this trial instead of the best "
                                        "(several objectives: one of the Pareto set)."),
    pick: Optional[str] = typer.Option(None, "--pick", help="Several objectives: show or export the Pareto trial "
                                       "these choose: weights (\"a/acc=0.7,b/acc=0.3\": the nearest to the ideal "
                                       "point by weighted Chebyshev distance, objectives normalised over the Pareto "
                                       "set), bounds (\"b/acc>=0.5\": then the best of the first objective not "
                                       "bounded), or both."),
):
    """The best trial: value, params, metrics; optionally export its adapter. With several
    objectives: the Pareto set (trial, each objective, params) and its hypervolume; one of
    its trials with --trial N or --pick (weights or bounds)."""
    try:
        st = open_study(study, name)
        how = None
        if st.config.study.objectives and trial is None and pick is None and export is None:
            if not st.pareto():
                raise LlmhpoError(f"study '{st.config.study.name}' has no feasible complete trial yet")
            if as_json:
                cfg = st.config
                print(json.dumps(jsonable({"study": cfg.study.name, "storage": cfg.study.storage, **pareto_json(st),
                                           "base": _base_json(st)}), indent=1))
            else:
                print_front(st)
            return
        if pick is not None:
            b, how = picked(st, pick, trial)
        else:
            b = chosen(st, trial)
        if export is not None:
            cfg = st.config
            where = cfg.kind.export(cfg.objective, b, export, merge=merge)
            (where / "study.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    except LlmhpoError as e:
        fail(e)
    if as_json:  # plain print: valid JSON on any terminal width, nothing else on stdout
        cfg = st.config
        metrics = {k: v for k, v in (b.attrs.get("metrics") or {}).items() if k != "traceback"}
        print(json.dumps(jsonable({"study": cfg.study.name, "storage": cfg.study.storage, "direction": cfg.study.direction,
                          "objective": cfg.kind.describe(cfg.objective), "number": b.number, "value": b.value,
                          **({"values": b.values} if b.values is not None else {}),
                          **({"picked": how} if how is not None else {}),
                          "params": b.params, "metrics": metrics, "timings": b.attrs.get("timings", {}),
                          "adapter_dir": metrics.get("adapter_dir"), "base": _base_json(st),
                          "exported": None if export is None else str(where)}), indent=1))
        return
    else:
        if how is not None:
            say(f"picked by {how}")
        if b.values is not None:
            say(f"trial {b.number} (Pareto set): " + ", ".join(
                f"{o.metric} {v:.6g}" for o, v in zip(st.config.study.objectives, b.values)))
        else:
            say(f"{'best ' if trial is None else ''}trial {b.number}: value {b.value:.6g}")
            _say_base(st, b)
        for k, v in b.params.items():
            say(f"  {k} = {fmt(v)}")
        for k, v in sorted((b.attrs.get("metrics") or {}).items()):
            if not isinstance(v, (list, dict)) and k != "traceback":
                say(f"  {k}: {fmt(v, none='None')}", style="dim")
    if export is not None:
        say(f"exported to {where}")
