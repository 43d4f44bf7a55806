"""How ``status`` and ``best`` show a study of several objectives (its Pareto set and
hypervolume) or with constraints, and which trial ``best --export`` takes: ``--trial N``, or
``--pick`` by weights and/or bounds (``pick``)."""

from __future__ import annotations

import re

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


def picked(st, pick: str, trial: int | None) -> tuple[object, str]:
    """``best --pick``: the Pareto trial ``pick`` chooses, and how it was chosen (``choose``)."""
    cfg = st.config
    if trial is not None:
        raise LlmhpoError("--pick and --trial both choose the trial; give one")
    if not cfg.study.objectives:
        raise LlmhpoError("--pick chooses among a Pareto set, and this study has one objective; use --trial N")
    front = st.pareto()
    if not front:
        raise LlmhpoError(f"study '{cfg.study.name}' has no feasible complete trial yet")
    return choose(cfg.study.objectives, front, *parse_pick(pick, cfg.study.objectives))


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


_PICK_TERM = re.compile(r"^\s*([^\s<>=]+)\s*(>=|<=|=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
PICK_HELP = ("\"a/acc=0.7,b/acc=0.3\" (weights of the objectives), \"b/acc>=0.5\" (bounds on any metric), "
             "or both, comma-separated")


def parse_pick(text: str, objectives) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """``--pick`` -> (weights by objective metric, [(metric, ">=" or "<=", bound)])."""
    names = [o.metric for o in objectives]
    weights: dict[str, float] = {}
    bounds = []
    for term in text.split(","):
        m = _PICK_TERM.match(term)
        if m is None:
            raise LlmhpoError(f"--pick term {term.strip()!r} is not metric=weight or metric>=bound / "
                              f"metric<=bound; write {PICK_HELP}")
        metric, op, number = m.group(1), m.group(2), float(m.group(3))
        if op != "=":
            bounds.append((metric, op, number))
            continue
        if metric not in names:
            raise LlmhpoError(f"--pick weighs {metric!r}, which is not an objective; the objectives: "
                              f"{', '.join(names)}")
        if number < 0 or metric in weights:
            raise LlmhpoError(f"--pick weight of {metric!r} must be given once and be >= 0, got {term.strip()!r}")
        weights[metric] = number
    if weights and not any(weights.values()):
        raise LlmhpoError("--pick weights are all 0; give at least one a positive weight")
    return weights, bounds


def choose(objectives, front: list, weights: dict[str, float], bounds: list) -> tuple[object, str]:
    """One trial of the Pareto set ``front``: those that meet every bound, then by the weights
    (the weighted Chebyshev distance to the ideal point, objectives normalised over those
    trials: ``pareto.chebyshev_pick``), or without weights the best by the first objective no
    bound names. (trial, how it was chosen)."""
    from llmhpo.goals import metric_value, signed
    from llmhpo.pareto import chebyshev_pick

    names = [o.metric for o in objectives]
    directions = [o.direction for o in objectives]

    def value(r, metric):
        if metric in names:
            return r.values[names.index(metric)]
        return metric_value(metric, r.value, r.attrs.get("metrics"), r.attrs.get("timings"))

    left = list(front)
    for metric, op, bound in bounds:
        seen = [v for v in (value(r, metric) for r in left) if v is not None]
        left = [r for r in left if (v := value(r, metric)) is not None and (v >= bound if op == ">=" else v <= bound)]
        if not left:
            where = f"ranges {min(seen):.6g} to {max(seen):.6g}" if seen else "is not recorded"
            raise LlmhpoError(f"no Pareto trial meets {metric} {op} {bound:g} (with the bounds before it): "
                              f"{metric} {where} there; loosen the bound")
    how = " and ".join(f"{m} {op} {b:g}" for m, op, b in bounds)
    if weights:
        w = [weights.get(n, 0.0) for n in names]
        i = chebyshev_pick([signed(directions, r.values) for r in left], w)
        text = ", ".join(f"{n} {x:g}" for n, x in zip(names, w))
        return left[i], (f"{how}, then " if how else "") + (
            f"weights {text} (weighted Chebyshev distance to the ideal point, each objective normalised "
            f"over the {len(left)} candidate Pareto trial(s))")
    k = next((i for i, n in enumerate(names) if n not in {m for m, _, _ in bounds}), 0)
    best = min(left, key=lambda r: (signed([directions[k]], [r.values[k]])[0], r.number))
    return best, f"{how}, then the best {names[k]} ({directions[k]})"
