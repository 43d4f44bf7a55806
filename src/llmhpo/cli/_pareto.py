"""How ``status`` and ``best`` show a study of several objectives (its Pareto set and
hypervolume) or with constraints, and which trial ``best --export --trial N`` takes."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from llmhpo._format import fmt
from llmhpo.cli._app import console, say
from llmhpo.errors import LlmhpoError


def _objectives(cfg) -> str:
    return ", ".join(f"{o.metric} ({o.direction})" for o in cfg.study.objectives)


def reference_text(ref: list[tuple[float, str]]) -> str:
    """The reference point and where each coordinate comes from."""
    sources = {s for _, s in ref}
    where = ("the base model's values" if sources == {"base"} else "the worst values of the feasible trials"
             if sources == {"worst"} else "the base model's values, else the worst of the feasible trials")
    return f"({', '.join(f'{v:.6g}' for v, _ in ref)}): {where}"


def pareto_json(st) -> dict:
    """The Pareto set, its hypervolume and the reference point, for ``--json``."""
    cfg, front, ref = st.config, st.pareto(), st.reference_point()
    return {"objectives": [o.to_dict() for o in cfg.study.objectives],
            "pareto": [{"number": r.number, "values": dict(zip([o.metric for o in cfg.study.objectives], r.values)),
                        "params": r.params, "constraints": r.constraints} for r in front],
            "hypervolume": st.hypervolume(),
            "reference_point": None if ref is None else [{"value": v, "source": s} for v, s in ref]}


def constraints_json(st, records: list) -> dict | None:
    """The constraints as written, and how many complete trials meet them (None: the study has none)."""
    if not st.config.constraints:
        return None
    done = [r for r in records if r.state == "COMPLETE" and "reevaluation_of" not in r.attrs]
    return {"constraints": [c.to_dict() for c in st.config.constraints],
            "feasible": sum(r.feasible for r in done), "complete": len(done)}


def say_status(st, records: list) -> None:
    """``status``: the feasible share, and with several objectives the front's size and hypervolume."""
    info = constraints_json(st, records)
    if info is not None:
        say(f"constraints: {info['feasible']} of {info['complete']} complete trials feasible ("
            + "; ".join(_constraint_text(c) for c in info["constraints"]) + ")")
    if st.config.study.objectives:
        front, ref = st.pareto(), st.reference_point()
        if not front:
            say(f"objectives: {_objectives(st.config)}; no feasible complete trial yet")
            return
        say(f"Pareto set: {len(front)} trial(s) (" + ", ".join(str(r.number) for r in front)
            + f"); hypervolume {st.hypervolume():.6g} against {reference_text(ref)}")


def _constraint_text(c: dict) -> str:
    return " and ".join(f"{c['metric']} {'>=' if k == 'min' else '<='} {c[k]}" for k in ("min", "max") if k in c)


def print_front(st) -> None:
    """``best``: the Pareto set as a table (trial, each objective, params)."""
    cfg, front = st.config, st.pareto()
    say(f"study {cfg.study.name}: objectives {_objectives(cfg)}")
    say(f"Pareto set: {len(front)} trial(s); hypervolume {st.hypervolume():.6g} against "
        f"{reference_text(st.reference_point())}")
    base = st.base()
    if base is not None:
        from llmhpo.goals import metric_value

        vals = [metric_value(o.metric, base[0], base[1], None) for o in cfg.study.objectives]
        say("base model (no adapter): " + ", ".join(f"{o.metric} {fmt(v, none='-')}"
                                                    for o, v in zip(cfg.study.objectives, vals)))
    table = Table("trial", *(o.metric for o in cfg.study.objectives), "params", title="Pareto set",
                  title_justify="left")
    table.columns[-1].overflow = "fold"
    for r in front:
        table.add_row(str(r.number), *(f"{v:.6g}" for v in r.values),
                      escape(", ".join(f"{k}={fmt(v)}" for k, v in r.params.items())))
    console.print(table)


def chosen(st, trial: int | None):
    """The trial ``best`` shows or exports: ``trial`` (with several objectives: a Pareto
    trial), else the best (the only Pareto trial)."""
    cfg = st.config
    if cfg.study.objectives:
        front = st.pareto()
        if not front:
            raise LlmhpoError(f"study '{cfg.study.name}' has no feasible complete trial yet")
        numbers = ", ".join(str(r.number) for r in front)
        if trial is None:
            if len(front) == 1:
                return front[0]
            raise LlmhpoError(f"the Pareto set has {len(front)} trials ({numbers}); pick one with --trial N")
        for r in front:
            if r.number == trial:
                return r
        raise LlmhpoError(f"trial {trial} is not in the Pareto set; pick one of: {numbers}")
    if trial is None:
        b = st.best()
        if b is None:
            raise LlmhpoError(f"study '{cfg.study.name}' has no complete "
                              f"{'feasible ' if cfg.constraints else ''}trial yet")
        return b
    for r in st.records():
        if r.number == trial and r.state == "COMPLETE":
            return r
    raise LlmhpoError(f"trial {trial} of study '{cfg.study.name}' is not complete (or does not exist); "
                      "`llmhpo status` lists the trials")
