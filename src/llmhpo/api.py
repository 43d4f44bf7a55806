"""The Python API: optimise your own function the way ``study.optimize(f)`` does in
Optuna, with any of llmhpo's optimisers, stored and resumable, in parallel processes."""

from __future__ import annotations

import os
import pickle
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from llmhpo.config import Config
from llmhpo.errors import ConfigError
from llmhpo.runner import RunSummary, run
from llmhpo.space import SearchSpace, Variable, variable_to_dict


def optimize(
    objective: Callable[..., Any],
    space: Mapping[str, Mapping[str, Any]] | Iterable[Variable] | SearchSpace,
    *,
    trials: int = 0,
    resource: float | None = None,
    optimizer: str = "bo",
    optimizer_options: Mapping[str, Any] | None = None,
    direction: str = "minimize",
    metric: str | None = None,
    metrics: Sequence[str] | None = None, directions: Sequence[str] | None = None, constraints: Iterable = (),
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    wall_time: float | str | None = None,
    warm_start: Iterable[Mapping[str, Any]] = (), warm_start_from: Any = None,
    max_repeated_failures: int = 3,
    runner: Mapping[str, Any] | None = None,
    fidelity: Mapping[str, Any] | None = None,
    overwrite: bool = False, progress: bool | None = None, quiet: bool = False,
) -> RunSummary:
    """Minimise (or maximise) ``objective(**params)`` over ``space`` in ``trials`` trials
    (with ``fidelity``: or a total ``resource``).

    objective: a function of the space's variables as keyword arguments, returning a number,
        a dict of numbers (``metric`` names the objective; the rest are stored as metrics)
        or a :class:`llmhpo.objectives.Result`; raise :class:`llmhpo.TrialFailed` to fail a
        trial with a reason. With ``workers > 1`` it runs in worker processes: define it at
        the top level of a module and start the study under ``if __name__ == "__main__":``.
    space: ``[Float("lr", 1e-5, 1e-1, log=True), Int("rank", 2, 32)]``, a SearchSpace, or
        TOML-style tables ``{"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}}``.
    fidelity: the ``[fidelity]`` table, e.g. ``{"min": 1, "max": 27, "scheduler": "asha"}``: the
        function is then also called with ``fidelity=llmhpo.Fidelity(resource, value, max,
        checkpoint)`` and returns its score after ``value`` units of the resource.
    storage: an Optuna storage URL (``"sqlite:///study.db"``) to keep every trial and resume
        by calling again with the same arguments; None keeps the study in memory.
    metrics, directions: several objectives (keys of the returned dict), in place of metric and
        direction; constraints: ``[[constraint]]`` tables, e.g. ``[{"metric": "mem", "max": 40}]``.
    warm_start_from: earlier studies ([warm_start] from): a storage (URL or path), one
        (storage, study) pair or one ``{"storage", "study"}`` dict; a list of any of these; or the
        table (``{"from": [...], "use": ...}``).
    runner: more of the ``[runner]`` table, e.g. ``{"executor": "ray", "trial_timeout": "1h",
        "max_retries": 2}``.
    Everything else as in the TOML file (docs/configuration.md). Returns the run's summary.
    """
    if not callable(objective):
        raise ConfigError(f"objective must be a function, got {type(objective).__name__}")
    if not trials and not resource:
        raise ConfigError("optimize needs a budget: trials=N evaluations (with fidelity=..., or resource=R units), "
                          "e.g. llmhpo.optimize(f, space, trials=20)")
    module = getattr(objective, "__module__", None) or "__main__"
    qualname = getattr(objective, "__qualname__", None) or getattr(objective, "__name__", "objective")
    name = study_name or re.sub(r"[^A-Za-z0-9_.\-]", "_", qualname)
    runner = dict(runner or {})
    if workers > 1 or runner.get("executor") in ("process", "ray") or "trial_timeout" in runner:
        _check_spawn_safe(objective, module)
    # stored to name the objective in `status`; a lambda's or closure's name is made readable
    target = f"{module}:{re.sub(r'[^A-Za-z0-9_.]', '_', qualname).strip('_.') or 'objective'}"
    tables = _space_tables(space)
    goal, metric = _goal(direction, metric, metrics, directions)
    raw: dict[str, Any] = {
        "study": {"name": name, **goal, "seed": seed,
                  **({"storage": storage} if storage else {})},
        "budget": {**({"trials": trials} if trials else {}), **({"resource": resource} if resource else {}),
                   **({"wall_time": wall_time} if wall_time is not None else {})},
        "runner": {"workers": workers, "max_repeated_failures": max_repeated_failures, **runner},
        "optimizer": {"name": optimizer, **dict(optimizer_options or {})},
        "objective": {"type": "python", "target": target, **({"metric": metric} if metric else {})},
        "space": tables,
        "warm_start": _warm_table(warm_start, warm_start_from),
        **({"fidelity": dict(fidelity)} if fidelity else {}),
        **({"constraint": [dict(c) for c in constraints]} if constraints else {}),
    }
    cfg = Config.from_dict(raw, default_name=name, base_dir=Path.cwd())
    cfg = replace(cfg, objective=replace(cfg.objective, function=objective))
    if storage is None:
        cfg = replace(cfg, study=replace(cfg.study, storage=None))
    return run(cfg, overwrite=overwrite, progress=progress, quiet=quiet)


def _space_tables(space: Any) -> dict[str, Any]:
    """The [space] tables of ``space``: Variables, a SearchSpace, or a dict as [space] is in
    TOML ({name: Variable or table}, and the keys ``preset`` and ``prior``); the config checks
    them as it checks a TOML file's."""
    items = space.items() if isinstance(space, Mapping) else ((v.name, v) for v in space)
    return {k: v if isinstance(v, str) else dict(v) if isinstance(v, Mapping)  # [space]'s preset / prior, a table
            else {key: val for key, val in variable_to_dict(v).items() if key != "name"} for k, v in items}


def _warm_table(warm_start: Iterable[Mapping[str, Any]], sources: Any) -> list | dict[str, Any]:
    """The ``warm_start`` entry: the listed configurations, or with earlier studies the table form."""
    listed = [dict(w) for w in warm_start]
    if sources is None:
        return listed
    if isinstance(sources, (str, os.PathLike)) or _pair(sources) \
            or (isinstance(sources, Mapping) and "storage" in sources and "from" not in sources):
        sources = [sources]  # one storage, one (storage, study) pair or one {"storage", "study"}
    table = dict(sources) if isinstance(sources, Mapping) else {"from": [_source(s) for s in sources]}
    return {**table, **({"configs": listed} if listed else {})}


def _pair(s: Any) -> bool:
    """Whether ``s`` is one (storage, study) pair: a tuple of a storage and a study name, where
    the name is neither a storage URL nor a file that exists (a tuple of two storages, or of
    two sources, lists them)."""
    return (isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], (str, os.PathLike))
            and isinstance(s[1], str) and "://" not in s[1] and not Path(s[1]).exists())


def _source(s: Any) -> Any:
    """One earlier study as ``[warm_start] from`` lists it: a storage (str or path), a
    ``{"storage", "study"}`` mapping, or a (storage, study) pair."""
    if isinstance(s, (str, os.PathLike)):
        return os.fspath(s)
    if isinstance(s, Mapping):
        return dict(s)
    if _pair(s):
        return {"storage": os.fspath(s[0]), "study": s[1]}
    raise ConfigError(f"warm_start_from: {s!r} is not an earlier study; give a storage (\"sqlite:///earlier.db\" "
                      "or a path), a {\"storage\": ..., \"study\": ...} mapping or a (storage, study) pair")


def _goal(direction: str, metric: str | None, metrics: Sequence[str] | None,
          directions: Sequence[str] | None) -> tuple[dict[str, Any], str | None]:
    """The [study] keys of what is optimised, and the metric a returned dict's value is."""
    if metrics is None and directions is None:
        return {"direction": direction}, metric
    if metrics is None or directions is None or len(metrics) != len(directions) or metric is not None:
        raise ConfigError("several objectives take metrics=[...] and directions=[...], one direction per metric "
                          "(and no metric=)")
    # a returned dict's value: its first objective (each objective is read from the dict)
    return {"objectives": [{"metric": m, "direction": d} for m, d in zip(metrics, directions)]}, \
        (metrics[0] if metrics else None)


def _check_spawn_safe(objective: Callable[..., Any], module: str) -> None:
    """Worker processes start clean (forked from a fork server, not from the driver): they
    import the objective by name. (That they re-run the script up to its
    ``if __name__ == "__main__":`` guard is checked by ``run``, for TOML studies too.)"""
    try:
        pickle.dumps(objective)
    except Exception as e:
        raise ConfigError(f"with workers > 1 the objective must be a function defined at the top level of a module "
                          f"(worker processes import it by name); {getattr(objective, '__qualname__', objective)!r} "
                          f"cannot be sent to them ({type(e).__name__}); or use workers = 1") from None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if module == "__main__" and not (path and Path(path).is_file()):
        raise ConfigError("with workers > 1 the objective must live in a .py file (worker processes import it "
                          "from there); a function typed into python -c, stdin or a notebook cannot be sent to "
                          "them: move it to a module, or use workers = 1")
