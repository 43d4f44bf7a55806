"""Study configuration: TOML -> frozen, validated objects, with a JSON round-trip.

Every check happens here, before a study is created or anything is computed; a bad file
raises ConfigError with one line naming the key and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from llmhpo._space_tables import build_space
from llmhpo._tables import expect, no_unknown, parse_duration, runner_table, storage_url
from llmhpo._warm import WarmFrom, toml_hint, warm_start_table
from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.goals import Constraint, Objective, parse_constraints, parse_objectives
from llmhpo.objectives import ObjectiveKind, ParseContext, all_tables, get_kind
from llmhpo.optimizers import MULTI_OBJECTIVE, check_optimizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from llmhpo.space import SearchSpace

_SECTIONS = {"study", "budget", "runner", "optimizer", "objective", "space", "warm_start", "fidelity", "logging",
             "constraint"}


@dataclass(frozen=True)
class StudyConfig:
    name: str
    storage: str | None  # an Optuna storage URL; None = in memory (bench)
    direction: str = "minimize"
    seed: int = 0
    #: noisy objectives: at the end of the study the best ``reevaluate`` configurations run once
    #: more each (another seed where the objective takes one), and the study's best is the best
    #: mean over a configuration's evaluations, not the luckiest single draw (0: off)
    reevaluate: int = 0
    #: several objectives (``[study] objectives``); empty: one, the objective's value in ``direction``
    objectives: tuple[Objective, ...] = ()

    @property
    def directions(self) -> list[str]:
        """One direction per objective: the objectives' or, with one objective, ``direction``."""
        return [o.direction for o in self.objectives] or [self.direction]


@dataclass(frozen=True)
class Budget:
    trials: int  # finished trials; with [fidelity]: full-fidelity trials' worth of resource (0: unset)
    wall_time: float | None = None  # seconds
    resource: float | None = None  # with [fidelity]: total resource units (e.g. training steps)


#: ``[fidelity] model``: what model-based proposals learn from
FIDELITY_MODELS = ("one_rung", "all_rungs")


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity: configurations climb rungs of ``resource`` from ``min`` to ``max``
    (factor ``eta``), and the ``scheduler`` (asha | sh | hyperband) decides which go on."""

    min: float
    max: float
    resource: str = "steps"  # the objective's resource: max_steps, epochs, steps, ...
    eta: int = 3
    scheduler: str = "asha"
    #: checkpoints kept beyond those that can still be promoted (0: only those)
    keep_checkpoints: int = 2
    checkpoint_dir: str = "llmhpo-runs"  # relative to the TOML's folder
    integer: bool = True  # whole-number rungs: the kind's answer (integer_resource), set at parse, not in TOML
    #: what model-based proposals learn from: "one_rung" (the optimiser's model of its first-rung
    #: scores; under Hyperband, BOHB's highest rung with d + 2 scores) or "all_rungs" (a GP over
    #: configuration and rung fitted on every rung's scores)
    model: str = "one_rung"
    #: what promotions rank a rung by: "score" (the rung's scores) or "model" (the top-rung score
    #: that the GP over every rung's scores predicts)
    promote: str = "score"

    def rungs(self) -> list[float]:
        from llmhpo.schedulers import rungs

        return rungs(self.min, self.max, self.eta, integer=self.integer)

    def to_dict(self) -> dict[str, Any]:
        """The [fidelity] table (``integer`` is the kind's to say, not the file's; ``model`` and
        ``promote``, keys added after studies were stored, left out at their defaults: their hash stays)."""
        added = {"model": "one_rung", "promote": "score"}
        return {k: v for k, v in vars(self).items() if k != "integer" and added.get(k, object()) != v}


@dataclass(frozen=True)
class RunnerConfig:
    #: trials at a time; with executor "ray", 0 = as many as the cluster's resources fit
    workers: int = 1
    executor: str = "auto"  # auto (inline for one worker, else processes) | inline | process | ray
    devices: tuple[str, ...] = ()  # GPU ids, one worker each (process executor; see gpus_per_trial)
    #: stop the study when this many trials in a row fail for the same reason (0: never)
    max_repeated_failures: int = 3
    #: a trial whose worker process, actor or node was lost runs again this many times
    max_retries: int = 1
    trial_timeout: float | None = None  # seconds; a trial past it is stopped and FAILs
    address: str | None = None  # ray: "auto", "ray://host:10001", or None to start a local cluster
    #: GPUs per trial: ray, what each actor reserves; process, devices grouped k per worker
    #: (a rank group) or shared by 1/g workers each
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0  # ray: CPUs each worker actor reserves

    def to_dict(self) -> dict[str, Any]:
        """The [runner] table, defaults left out where a key would not parse back."""
        out: dict[str, Any] = {"workers": self.workers or "auto", "executor": self.executor,
                               "max_repeated_failures": self.max_repeated_failures, "max_retries": self.max_retries}
        if self.devices:
            out["devices"] = list(self.devices)
        if self.trial_timeout is not None:
            out["trial_timeout"] = self.trial_timeout
        if self.executor == "ray":
            out.update(gpus_per_trial=self.gpus_per_trial, cpus_per_trial=self.cpus_per_trial)
            if self.address is not None:
                out["address"] = self.address
        elif self.gpus_per_trial:
            out["gpus_per_trial"] = self.gpus_per_trial
        return out


@dataclass(frozen=True)
class LoggingConfig:
    """[logging]: tracking tools that also get every finished trial (``llmhpo.tracking``).
    Not part of the search: changing it never needs ``--overwrite``. Paths are absolute."""

    mlflow: str | None = None  # an MLflow tracking URI (sqlite:///.../mlflow.db by default)
    tensorboard: str | None = None  # a folder of TensorBoard event files, one sub-folder per trial
    wandb: str | None = None  # Weights & Biases mode: "offline" (no account needed) or "online"
    experiment: str | None = None  # MLflow experiment / W&B project; default: the study name

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.mlflow, self.tensorboard, self.wandb))

    def to_dict(self) -> dict[str, Any]:
        """The [logging] table, resolved (parses back to the same object)."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Config:
    study: StudyConfig
    budget: Budget
    runner: RunnerConfig
    optimizer: str
    optimizer_options: dict[str, Any]
    #: the objective kind's own frozen spec (``objective.kind`` names the kind)
    objective: Any
    space: SearchSpace
    warm_start: tuple[dict[str, Any], ...] = ()
    base_dir: str = "."  # relative paths in the config are relative to this folder
    fidelity: FidelityConfig | None = None
    logging: LoggingConfig = LoggingConfig()
    constraints: tuple[Constraint, ...] = ()  # [[constraint]]
    warm_from: WarmFrom | None = None  # [warm_start] from = [...]: earlier studies

    def resource_budget(self) -> float | None:
        """With [fidelity]: the total resource the study may spend."""
        if self.fidelity is None:
            return None
        if self.budget.resource is not None:
            return self.budget.resource
        return self.budget.trials * self.fidelity.max

    @property
    def kind(self) -> ObjectiveKind:
        return get_kind(self.objective.kind)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        tables = self.objective.to_tables()
        return {
            "study": {"name": self.study.name, "storage": self.study.storage,
                      **({"objectives": [o.to_dict() for o in self.study.objectives]} if self.study.objectives
                         else {"direction": self.study.direction}),
                      "seed": self.study.seed,
                      **({"reevaluate": self.study.reevaluate} if self.study.reevaluate else {})},
            "budget": {"trials": self.budget.trials, "wall_time": self.budget.wall_time,
                       "resource": self.budget.resource},
            "optimizer": {"name": self.optimizer, **self.optimizer_options},
            "objective": {"type": self.objective.kind, **tables.pop("objective")},
            "space": {v.pop("name"): v for v in self.space.to_dict()},
            # the array form as before (stored hashes unchanged); the table form with ``from``
            "warm_start": [dict(w) for w in self.warm_start] if self.warm_from is None else
            {**self.warm_from.to_dict(), **({"configs": [dict(w) for w in self.warm_start]} if self.warm_start else {})},
            "base_dir": self.base_dir,
            **({"fidelity": self.fidelity.to_dict()} if self.fidelity else {}),
            **tables,
            "runner": self.runner.to_dict(),
            **({"logging": self.logging.to_dict()} if self.logging.enabled else {}),
            **({"constraint": [c.to_dict() for c in self.constraints]} if self.constraints else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], default_name: str = "study", base_dir: str | Path = ".") -> "Config":
        """Validate a config given as nested dicts (TOML tables); relative paths are relative to ``base_dir``."""
        return _parse(raw, default_name, Path(base_dir))

    def search_hash(self) -> str:
        """Hash of what defines the search (space, optimiser, objective, seed, direction).

        Budget, workers, devices and storage are left out: resuming with a larger budget
        or more GPUs is the same study.
        """
        d = search_part(self.to_dict())
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def search_part(d: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config dict that defines the search (what ``search_hash`` covers)."""
    out = {k: v for k, v in d.items() if k not in ("budget", "runner", "base_dir", "logging")}
    out["study"] = {k: v for k, v in (d.get("study") or {}).items() if k in ("direction", "seed", "objectives")}
    # priors only steer where the optimiser looks: a study resumes under another prior (and a
    # study stored before priors existed keeps its hash under a preset's built-in one)
    out["space"] = {name: {k: v for k, v in var.items() if k != "prior"} if isinstance(var, Mapping) else var
                    for name, var in (d.get("space") or {}).items()}
    return out


def load_config(path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Read and validate a study TOML file. Relative paths in it are relative to its folder.

    overrides: ``{table: {key: value}}`` merged in before validation (the command line's
    ``--trials``, ``--workers``), so they are checked like the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; give the path to a study TOML file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"'{path}' is not valid TOML: {e}{toml_hint(str(e))}") from e
    for table, values in (overrides or {}).items():
        if not isinstance(raw.get(table, {}), Mapping):
            continue  # reported by _parse
        raw[table] = {**raw.get(table, {}), **values}
    if "base_dir" in raw:
        raise ConfigError("[top level] has an unknown key 'base_dir'; relative paths are relative to the TOML's folder")
    return _parse(raw, path.stem, path.parent.resolve())


def _parse(raw: Mapping[str, Any], default_name: str, base_dir: Path) -> Config:
    owned = all_tables()  # kind-owned tables such as [model] -> "finetune"
    no_unknown("top level", raw, _SECTIONS | set(owned) | {"base_dir"})
    if isinstance(raw.get("base_dir"), str):  # a stored study's config: the folder of its TOML
        base_dir = Path(raw["base_dir"])
    raw = {k: v for k, v in raw.items() if k != "base_dir"}
    # JSON round-trips write unset optional keys as null
    raw = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, Mapping) else v)
           for k, v in raw.items()}
    for key, value in raw.items():
        if key not in ("warm_start", "constraint") and not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table: write [{key}] on its own line")

    # [objective]
    if "objective" not in raw:
        raise ConfigError("the section [objective] is missing; add e.g. [objective] type = \"finetune\"")
    obj = dict(raw["objective"])
    kind_name = expect("objective", obj, "type", (str,), required=True)
    kind = get_kind(kind_name)
    obj.pop("type")

    # the tables in the order their problems are reported
    study = _study(raw.get("study", {}), default_name, base_dir, kind, "fidelity" in raw)
    budget = _budget(raw.get("budget"), "fidelity" in raw)
    runner = _runner(raw.get("runner", {}))

    # [optimizer]
    if "optimizer" not in raw:
        raise ConfigError("the section [optimizer] is missing; add e.g. [optimizer] name = \"bo\"")
    op = dict(raw["optimizer"])
    opt_name = expect("optimizer", op, "name", (str,), required=True)
    op.pop("name")
    check_optimizer(opt_name, op)

    # the objective kind's own tables
    for table, owner in owned.items():
        if table in raw and owner != kind.name:
            raise ConfigError(f"[{table}] is only used with [objective] type = \"{owner}\"; remove it")
    spec = kind.parse(obj, {t: dict(raw[t]) for t in kind.tables if t in raw}, ParseContext(base_dir, study.name))
    if study.objectives:
        spec = kind.for_objectives(spec, [o.metric for o in study.objectives])

    # [space]
    space = build_space(dict(raw.get("space", {})), kind, spec)
    kind.check_space(spec, space)

    ws, warm_from = warm_start_table(raw.get("warm_start", []), space, base_dir)
    fidelity = _fidelity(raw["fidelity"], kind, spec, space) if "fidelity" in raw else None
    logging = _logging(raw.get("logging", {}), base_dir)
    constraints = parse_constraints(raw.get("constraint", []), kind.scores_base(spec))
    _check_goals(study, constraints, opt_name, fidelity is not None)
    for key, value in (("model", "all_rungs"), ("promote", "model")):
        if fidelity is not None and getattr(fidelity, key) == value and opt_name != "bo":
            raise ConfigError(f"[fidelity] {key} = \"{value}\" needs a GP to fit every rung's scores, and "
                              f"optimizer {opt_name!r} has none; use [optimizer] name = \"bo\" or drop the key")
    if warm_from is not None and warm_from.use is None:  # measured: data helps bo most (docs/benchmarks.md)
        one = opt_name == "bo" and not (study.objectives or constraints)
        warm_from = replace(warm_from, use="data" if one else "design")
    if warm_from is not None and warm_from.use == "data" and (study.objectives or constraints):
        raise ConfigError("[warm_start] use = \"data\" is for one objective without constraints yet; "
                          "write use = \"design\" (the best earlier configurations evaluated first)")
    return Config(study, budget, runner, opt_name, op, spec, space, ws, str(base_dir), fidelity, logging, constraints,
                  warm_from)


def _check_goals(study: StudyConfig, constraints: tuple, optimizer: str, fidelity: bool) -> None:
    """What several objectives and constraints do not work with yet."""
    what = "[study] objectives" if study.objectives else "[[constraint]]" if constraints else None
    if what is None:
        return
    if fidelity:
        raise ConfigError(f"{what} does not work with [fidelity] yet (rungs compare one value); drop one of the two")
    if study.reevaluate:
        raise ConfigError(f"[study] reevaluate is for single-objective studies without constraints; drop it or {what}")
    if study.objectives and optimizer not in MULTI_OBJECTIVE:
        raise ConfigError(f"optimizer '{optimizer}' optimises one objective; with [study] objectives use "
                          f"{', '.join(MULTI_OBJECTIVE[:-1])} or {MULTI_OBJECTIVE[-1]}")


def _study(st: Mapping[str, Any], default_name: str, base_dir: Path, kind: ObjectiveKind,
           fidelity: bool) -> StudyConfig:
    """[study]; ``fidelity``: whether the file has a [fidelity] table."""
    no_unknown("study", st, {"name", "storage", "direction", "seed", "reevaluate", "objectives"})
    name = expect("study", st, "name", (str,), default_name)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(f"[study] name = {name!r} may only use letters, digits, '_', '-' and '.'")
    storage = storage_url(expect("study", st, "storage", (str,), f"{name}.db"), base_dir)
    direction = expect("study", st, "direction", (str,), kind.default_direction)
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"[study] direction = {direction!r} must be \"minimize\" or \"maximize\"")
    objectives = parse_objectives(st["objectives"]) if "objectives" in st else ()
    if objectives and "direction" in st:
        raise ConfigError("[study] direction and objectives: each objective has its own direction; drop direction")
    seed = expect("study", st, "seed", (int,), 0)
    reevaluate = expect("study", st, "reevaluate", (int,), 0)
    if reevaluate < 0:
        raise ConfigError(f"[study] reevaluate = {reevaluate} must be >= 0 (the top configurations run again)")
    if reevaluate and fidelity:
        raise ConfigError("[study] reevaluate is for studies without [fidelity]; drop one of the two")
    # several objectives: ``direction`` is the first one's (for views that show one value)
    return StudyConfig(name, storage, objectives[0].direction if objectives else direction, seed, reevaluate,
                       objectives)


def _budget(bd: Mapping[str, Any] | None, fidelity: bool) -> Budget:
    """[budget] (None: the file has none); ``fidelity``: whether the file has a [fidelity] table."""
    if bd is None:
        raise ConfigError("the section [budget] is missing; add e.g. [budget] trials = 50")
    no_unknown("budget", bd, {"trials", "wall_time", "resource"})
    resource = expect("budget", bd, "resource", (int, float), None)
    if resource is not None and not fidelity:
        raise ConfigError("[budget] resource needs a [fidelity] table (the resource it counts); "
                          "use trials without one")
    if resource is not None and resource <= 0:
        raise ConfigError(f"[budget] resource = {resource} must be positive")
    trials = expect("budget", bd, "trials", (int,), 0 if resource is not None else None, required=resource is None)
    if trials < 1 and resource is None:
        raise ConfigError(f"[budget] trials = {trials} must be at least 1")
    wall = parse_duration(bd["wall_time"], "[budget] wall_time") if "wall_time" in bd else None
    return Budget(trials, wall, None if resource is None else float(resource))


def _runner(rn: Mapping[str, Any]) -> RunnerConfig:
    """[runner]: how many trials at a time, and where they run."""
    return RunnerConfig(*runner_table(rn))


def _fidelity(fd: Mapping[str, Any], kind: ObjectiveKind, spec, space: SearchSpace) -> FidelityConfig:
    from llmhpo.schedulers import SCHEDULERS

    no_unknown("fidelity", fd, {"resource", "min", "max", "eta", "scheduler", "keep_checkpoints", "checkpoint_dir",
                                "model", "promote"})
    supported = kind.fidelity_resources(spec)
    if not supported:
        raise ConfigError(f"[fidelity]: a {kind.name} objective has no resource to grow; remove [fidelity]")
    resource = expect("fidelity", fd, "resource", (str,), supported[0] if supported[0] != "*" else "steps")
    if resource not in supported and "*" not in supported:
        raise ConfigError(f"[fidelity] resource = {resource!r} is not one a {kind.name} objective grows; "
                          f"use one of: {', '.join(supported)}")
    r_min = expect("fidelity", fd, "min", (int, float), required=True)
    r_max = expect("fidelity", fd, "max", (int, float), required=True)
    eta = expect("fidelity", fd, "eta", (int,), 3)
    if eta < 2:
        raise ConfigError(f"[fidelity] eta = {eta} must be at least 2")
    if not 0 < r_min < r_max:
        raise ConfigError(f"[fidelity] min = {r_min} and max = {r_max} need 0 < min < max")
    kind.check_fidelity(spec, r_min, r_max)
    if r_max / r_min < eta:
        raise ConfigError(f"[fidelity] max / min = {r_max / r_min:g} is below eta = {eta}: there would be one rung; "
                          f"lower min to at most {r_max / eta:g} or lower eta")
    scheduler = expect("fidelity", fd, "scheduler", (str,), "asha")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"[fidelity] scheduler = {scheduler!r} is unknown{did_you_mean(scheduler, SCHEDULERS)}; "
                          f"use one of: {', '.join(SCHEDULERS)}")
    keep = expect("fidelity", fd, "keep_checkpoints", (int,), 2)
    if keep < 0:
        raise ConfigError(f"[fidelity] keep_checkpoints = {keep} must be >= 0")
    folder = expect("fidelity", fd, "checkpoint_dir", (str,), "llmhpo-runs")
    integer = kind.integer_resource(spec, resource)
    if integer and any(r != int(r) for r in (r_min, r_max)):
        raise ConfigError(f"[fidelity] min and max count {resource}: give whole numbers")
    for name in sorted(set(kind.resource_params(spec, resource)) & set(space.names)):  # searched in vain
        raise ConfigError(f"[space.{name}] is searched, but [fidelity] resource = {resource!r} sets {name} "
                          f"for every rung; remove [space.{name}] (or [fidelity])")
    model = expect("fidelity", fd, "model", (str,), "one_rung")
    if model not in FIDELITY_MODELS:
        raise ConfigError(f"[fidelity] model = {model!r} is unknown{did_you_mean(model, FIDELITY_MODELS)}; "
                          f"use one of: {', '.join(FIDELITY_MODELS)}")
    promote = expect("fidelity", fd, "promote", (str,), "score")
    if promote not in ("score", "model"):
        raise ConfigError(f"[fidelity] promote = {promote!r} is unknown{did_you_mean(promote, ('score', 'model'))}; "
                          "use \"score\" (rank a rung by its scores) or \"model\" (by the top-rung score the GP of "
                          "every rung predicts)")
    return FidelityConfig(float(r_min), float(r_max), resource, eta, scheduler, keep, folder, integer, model,
                          promote)


def _logging(lg: Mapping[str, Any], base_dir: Path) -> LoggingConfig:
    """[logging]: ``mlflow`` / ``tensorboard`` / ``wandb`` = true, or where (a URI, a folder, a mode)."""
    no_unknown("logging", lg, {"mlflow", "tensorboard", "wandb", "experiment"})

    def where(key: str) -> str | bool | None:
        v = expect("logging", lg, key, (bool, str), None)
        return None if v is False else v

    mlflow = where("mlflow")
    if mlflow is True:
        mlflow = "sqlite:///" + str((base_dir / "mlflow.db").resolve())
    elif isinstance(mlflow, str):
        if not mlflow.strip():
            raise ConfigError("[logging] mlflow = \"\" is empty; write true (an mlflow.db beside the TOML), "
                              "a .db file, a folder, or a tracking URI such as \"http://host:5000\"")
        if mlflow.endswith(".db") and "://" not in mlflow:
            mlflow = "sqlite:///" + str((base_dir / Path(mlflow).expanduser()).resolve())
        elif mlflow.startswith("sqlite:///") and not mlflow.startswith("sqlite:////"):
            mlflow = "sqlite:///" + str((base_dir / mlflow[len("sqlite:///"):]).resolve())
        elif "://" not in mlflow and mlflow != "databricks":  # a folder: MLflow's file store
            mlflow = (base_dir / Path(mlflow).expanduser()).resolve().as_uri()
    tensorboard = where("tensorboard")
    if tensorboard is True:
        tensorboard = "tensorboard"
    if isinstance(tensorboard, str):
        tensorboard = str((base_dir / Path(tensorboard).expanduser()).resolve())
    wandb = where("wandb")
    if wandb is True:
        wandb = "offline"
    if wandb is not None and wandb not in ("offline", "online"):
        raise ConfigError(f"[logging] wandb = {wandb!r} must be true (offline), \"offline\" or \"online\"")
    experiment = expect("logging", lg, "experiment", (str,), None)
    return LoggingConfig(mlflow, tensorboard, wandb, experiment)
