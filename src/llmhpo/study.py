"""Studies in Optuna storage: the source of truth for every trial and the optimiser's state.

A llmhpo study is an ordinary Optuna study (sqlite by default, any Optuna storage URL),
so ``optuna-dashboard`` and ``optuna.load_study`` read it. Per trial we store the native
params (with Optuna distributions), and as user attributes the unit-cube point, the
candidate's id and bookkeeping, metrics, timings and, for a failure, its reason. The
study's system attributes hold the config, its hash and the optimiser state, rewritten
after every ask and tell, so that a crashed run resumes exactly.

A study of several objectives (``[study] objectives``) is an Optuna multi-objective study
(one direction per objective, each trial the list of values); constraints are each trial's
``constraints`` system attribute (<= 0 where one holds), as Optuna's samplers, ``best_trials``
and optuna-dashboard read feasibility.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

from llmhpo._json import jsonable
from llmhpo._version import __version__
from llmhpo.config import Config, search_part
from llmhpo.errors import SeveralStudies, StudyError
from llmhpo.goals import feasible, metric_value, signed
from llmhpo.pareto import hypervolume, non_dominated
from llmhpo.space import Categorical, Float, SearchSpace
from llmhpo.storage import StorageBusy, open_storage  # noqa: F401 (re-exported: callers import them from here)

if TYPE_CHECKING:  # the optimisers (and torch) are not needed to read a study
    from llmhpo.optimizers import Candidate

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG_KEY = "llmhpo:config"
HASH_KEY = "llmhpo:config_hash"
STATE_KEY = "llmhpo:optimizer_state"
#: the resource budget at which a multi-fidelity run last ended by its budget (its waiting
#: configurations pruned): a rerun with the same budget has nothing to do
CLOSED_KEY = "llmhpo:closed_at_budget"


def distributions(space: SearchSpace) -> dict[str, Any]:
    out = {}
    for v in space:
        if isinstance(v, Float):
            out[v.name] = FloatDistribution(v.low, v.high, log=v.log)
        elif isinstance(v, Categorical):
            out[v.name] = CategoricalDistribution(v.choices)
        else:
            out[v.name] = IntDistribution(v.low, v.high, log=v.log)
    return out


@dataclass
class TrialRecord:
    """A trial as llmhpo reads it back."""

    number: int
    trial_id: int
    state: str  # COMPLETE | FAIL | RUNNING; with [fidelity] also WAITING (may be promoted) | PRUNED
    value: float | None
    params: dict[str, Any]
    candidate_id: int | None
    interrupted: bool
    attrs: dict[str, Any]
    intermediate: dict[int, float] | None = None  # multi-fidelity: step (resource) -> value
    start: float | None = None  # epoch seconds: when the trial started (Optuna's datetime_start)
    end: float | None = None  # epoch seconds: when it finished (datetime_complete); None while running
    #: several objectives: the values, one per objective (``value`` is then the first one)
    values: list[float] | None = None
    constraints: list[float] | None = None  # <= 0 where a constraint holds; None: none stored

    @property
    def feasible(self) -> bool:
        return feasible(self.constraints)


class Study:
    """One llmhpo study in an Optuna storage."""

    def __init__(self, storage: BaseStorage, study: optuna.Study, config: Config):
        self.storage, self.optuna_study, self.config = storage, study, config
        self.study_id = study._study_id
        self._dists = distributions(config.space)
        self.lease: Any = None  # set when this process drives the study (open)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, config: Config, overwrite: bool = False, storage: BaseStorage | None = None) -> "Study":
        """Create the study, or reopen it to resume; a changed config needs ``overwrite``.

        The caller becomes the study's driver (``lease``; ``close`` lets go): a second
        driver is refused while this one lives. Creation is atomic for users: a study left
        without its llmhpo settings by a kill during creation is made again.
        """
        from llmhpo.lease import Lease

        if storage is None:
            storage = open_storage(config.study.storage)
        name = config.study.name
        lease = Lease(storage, name)
        previous = lease.acquire()
        try:
            study = cls._open_or_create(storage, config, overwrite, previous)
        except BaseException:
            lease.release()
            raise
        out = cls(storage, study, config)
        out.lease = lease
        return out

    @staticmethod
    def _open_or_create(storage: BaseStorage, config: Config, overwrite: bool, previous: Any) -> optuna.Study:
        name = config.study.name
        exists = name in [s.study_name for s in storage.get_all_studies()]
        if exists:
            study_id = storage.get_study_id_from_name(name)
            old = storage.get_study_system_attrs(study_id)
            if HASH_KEY not in old:
                half_made = previous is not None and not storage.get_all_trials(study_id, deepcopy=False)
                if not half_made:
                    raise StudyError(f"study '{name}' in {config.study.storage} was not made by llmhpo; "
                                     "choose another [study] name")
                optuna.delete_study(study_name=name, storage=storage)  # killed while being created
                exists = False
            elif old[HASH_KEY] != config.search_hash() and not overwrite:
                raise StudyError(_changed(name, old[CONFIG_KEY], config))
            elif overwrite and old[HASH_KEY] != config.search_hash():
                optuna.delete_study(study_name=name, storage=storage)
                exists = False
        if not exists:
            study = optuna.create_study(study_name=name, storage=storage, directions=config.study.directions)
            storage.set_study_user_attr(study._study_id, "llmhpo_version", __version__)
            storage.set_study_user_attr(study._study_id, "optimizer", config.optimizer)
            storage.set_study_user_attr(study._study_id, "objective", config.objective.kind)
            storage.set_study_system_attr(study._study_id, CONFIG_KEY, json.dumps(config.to_dict(), default=str))
            # written last: a study with its hash is complete
            storage.set_study_system_attr(study._study_id, HASH_KEY, config.search_hash())
        else:
            study = optuna.load_study(study_name=name, storage=storage)
            # budget and workers may change between runs: keep the latest
            storage.set_study_system_attr(study._study_id, CONFIG_KEY, json.dumps(config.to_dict(), default=str))
        return study

    @classmethod
    def peek(cls, storage: BaseStorage, config: Config) -> "Study | None":
        """``config``'s stored study, for a look (no lease, nothing written); None when there is
        none, or it was made with another configuration (``open`` then says what to do)."""
        name = config.study.name
        if name not in [s.study_name for s in storage.get_all_studies()]:
            return None
        if storage.get_study_system_attrs(storage.get_study_id_from_name(name)).get(HASH_KEY) != config.search_hash():
            return None
        return cls(storage, optuna.load_study(study_name=name, storage=storage), config)

    def close(self) -> None:
        """Let go of the study (the next driver may take it)."""
        lease = getattr(self, "lease", None)
        if lease is not None:
            lease.release()
            self.lease = None

    @staticmethod
    def names(storage_url: str) -> list[str]:
        """The names of the studies the storage at ``storage_url`` holds, oldest first."""
        return [s.study_name for s in open_storage(storage_url).get_all_studies()]

    @classmethod
    def load(cls, storage_url: str, name: str | None = None) -> "Study":
        """Open an existing study for reading (status, best, report); creates nothing."""
        if storage_url.startswith("sqlite:///") and storage_url != "sqlite:///:memory:":
            path = Path(storage_url[len("sqlite:///"):])
            if not path.is_file() or path.stat().st_size == 0:
                raise StudyError(f"no study in {path}: the file does not exist or is empty; "
                                 "run `llmhpo run STUDY.toml` first, or check the path")
        storage = open_storage(storage_url)
        names = [s.study_name for s in storage.get_all_studies()]
        if not names:
            raise StudyError(f"no study in {storage_url}; run `llmhpo run STUDY.toml` first")
        if name is None:
            if len(names) > 1:
                raise SeveralStudies(storage_url, names)
            name = names[0]
        if name not in names:
            raise StudyError(f"no study '{name}' in {storage_url}; it holds: {', '.join(names)}")
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = storage.get_study_system_attrs(study._study_id)
        if CONFIG_KEY not in attrs:
            raise StudyError(f"study '{name}' was not made by llmhpo")
        config = Config.from_dict(json.loads(attrs[CONFIG_KEY]), default_name=name)
        return cls(storage, study, config)

    def driver(self) -> dict[str, Any] | None:
        """The lease row of the study's driver (host, pid, heartbeat, token, workers), or None
        when no driver ever ran it; ``llmhpo.lease.alive`` says whether it still lives."""
        from llmhpo import lease

        return lease.read(self.storage, self.config.study.name)

    # ------------------------------------------------------------------ optimiser state
    def save_optimizer_state(self, state: dict[str, Any]) -> None:
        self.storage.set_study_system_attr(self.study_id, STATE_KEY, json.dumps(state))

    def optimizer_state(self) -> dict[str, Any] | None:
        raw = self.storage.get_study_system_attrs(self.study_id).get(STATE_KEY)
        return None if raw is None else json.loads(raw)

    def note_closed(self, budget: float) -> None:
        """A multi-fidelity run ended by its resource budget ``budget``: its next job did not fit
        and its waiting configurations were pruned."""
        self.storage.set_study_system_attr(self.study_id, CLOSED_KEY, float(budget))

    def closed_at(self) -> float | None:
        """The budget ``note_closed`` recorded, or None."""
        v = self.storage.get_study_system_attrs(self.study_id).get(CLOSED_KEY)
        return None if v is None else float(v)

    # ------------------------------------------------------------------ the base score
    def set_base(self, value: float, metrics: dict[str, Any]) -> None:
        """The untuned objective's score (the base model without an adapter), once per study."""
        self.storage.set_study_user_attr(self.study_id, "base_metrics", jsonable(metrics))
        self.storage.set_study_user_attr(self.study_id, "base_value", float(value))

    def base(self) -> tuple[float, dict[str, Any]] | None:
        """(value, metrics) of the base model, or None when it was not scored."""
        attrs = self.storage.get_study_user_attrs(self.study_id)
        if "base_value" not in attrs:
            return None
        return float(attrs["base_value"]), dict(attrs.get("base_metrics") or {})

    def note_warm_start(self, record: dict[str, Any]) -> None:
        """Which earlier studies ([warm_start] from) the last start used, and how many trials."""
        self.storage.set_study_user_attr(self.study_id, "warm_start_from", jsonable(record))

    def warm_start(self) -> dict[str, Any] | None:
        """``note_warm_start``'s record, or None."""
        return self.storage.get_study_user_attrs(self.study_id).get("warm_start_from")

    # ------------------------------------------------------------------ trials
    def create_trial(self, candidate: "Candidate", params: dict[str, Any], extra: dict[str, Any] | None = None) -> int:
        """A RUNNING trial for ``candidate``, params and attributes written in one transaction
        (a crash never leaves a trial without its candidate); returns its storage id."""
        attrs = {"x": [float(v) for v in candidate.x], "candidate_id": candidate.id,
                 "candidate": candidate.to_dict()["info"], **(extra or {})}
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=dict(params),
                                             distributions={k: self._dists[k] for k in params}, user_attrs=attrs)
        return self.storage.create_new_trial(self.study_id, template_trial=template)

    def note_retry(self, trial_id: int, attempt: int, reason: str) -> None:
        """The trial's worker was lost; it runs again (``attempt`` counts from 1)."""
        self.storage.set_trial_user_attr(trial_id, "retries", attempt)
        self.storage.set_trial_user_attr(trial_id, f"retry_{attempt}_reason", reason)

    def create_reevaluation(self, of: "TrialRecord", seed: int) -> int:
        """A RUNNING trial that evaluates ``of``'s configuration once more (``[study]
        reevaluate``): not told to the optimiser, not counted in the budget."""
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=dict(of.params), distributions={k: self._dists[k] for k in of.params},
            user_attrs={"x": of.attrs.get("x"), "reevaluation_of": of.number, "seed": seed})
        return self.storage.create_new_trial(self.study_id, template_trial=template)

    def trial_number(self, trial_id: int) -> int:
        return self.storage.get_trial_number_from_id(trial_id)

    def finish_trial(self, trial_id: int, value: Any, metrics: dict[str, Any] | None = None,
                     timings: dict[str, float] | None = None, error: str | None = None,
                     extra: dict[str, Any] | None = None, constraints: list[float] | None = None) -> None:
        """COMPLETE with ``value`` (several objectives: their list), or FAIL with ``error``
        (value None). constraints: the trial's constraint values (<= 0 where one holds)."""
        attrs = {"metrics": jsonable(metrics or {}), "timings": jsonable(timings or {}), **(extra or {})}
        # each scalar metric also on its own, so trials_dataframe() and optuna-dashboard show it as a column
        for k, v in attrs["metrics"].items():
            if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k != "traceback":
                attrs[f"metric:{k}"] = v
        if error is not None:
            attrs["error"] = error
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(trial_id, k, v)
        if constraints is not None:
            self.storage.set_trial_system_attr(trial_id, _CONSTRAINTS_KEY, [float(c) for c in constraints])
        if value is None:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        else:
            values = value if isinstance(value, (list, tuple)) else [value]
            self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(v) for v in values])

    # ------------------------------------------------------------------ multi-fidelity
    def report_rung(self, trial_id: int, step: int, value: float | None, attrs: dict[str, Any]) -> None:
        """One rung's result: the score as Optuna's intermediate value at ``step`` (so the
        dashboard draws learning curves) and the rung's attributes."""
        if value is not None:
            self.storage.set_trial_intermediate_value(trial_id, int(step), float(value))
        for k, v in jsonable(attrs).items():
            self.storage.set_trial_user_attr(trial_id, k, v)

    def set_waiting(self, trial_id: int) -> None:
        """Between rungs: the configuration waits to be promoted (Optuna's WAITING)."""
        self.storage.set_trial_state_values(trial_id, TrialState.WAITING)

    def set_running(self, trial_id: int, rung: int) -> None:
        self.storage.set_trial_user_attr(trial_id, "rung", rung)
        self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)

    def prune(self, trial_id: int) -> None:
        """Stopped by the scheduler: PRUNED, its last rung's score kept as an intermediate value."""
        self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)

    def cut_short(self, trial_id: int, rung: int) -> None:
        """A multi-fidelity job stopped by its driver: the configuration waits, and ``rung``
        runs again (from its checkpoint) when the study resumes."""
        self.storage.set_trial_user_attr(trial_id, "cut_short_rung", rung)
        self.storage.set_trial_state_values(trial_id, TrialState.WAITING)

    def resumed(self, trial_id: int) -> None:
        """The rung a job was cut short at runs again."""
        self.storage.set_trial_user_attr(trial_id, "cut_short_rung", None)

    def note_checkpoint(self, trial_id: int, deleted: bool) -> None:
        """Whether the configuration's checkpoint was deleted (a promotion then trains from the start)."""
        self.storage.set_trial_user_attr(trial_id, "checkpoint_deleted", deleted)

    def mark_interrupted(self, trial_id: int) -> None:
        """A trial left RUNNING by a crash: FAIL, flagged so it is neither counted nor told."""
        self.storage.set_trial_user_attr(trial_id, "interrupted", True)
        self.storage.set_trial_user_attr(trial_id, "error", "interrupted (the run stopped); evaluated again on resume")
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def record(self, trial_id: int) -> TrialRecord:
        return _record(self.storage.get_trial(trial_id))

    def records(self) -> list[TrialRecord]:
        out = []
        for t in self.storage.get_all_trials(self.study_id, deepcopy=False):
            out.append(_record(t))
        return out

    def best(self) -> TrialRecord | None:
        """The best complete trial (with constraints: the best feasible one; with several
        objectives, which have no one best: the Pareto set's first, see ``pareto``). With re-evaluations (``[study] reevaluate``): among the
        configurations evaluated more than once, the best mean of their evaluations (the
        record of its first trial, its ``value`` the mean, ``attrs["evaluations"]`` their
        values), so a lucky draw of a noisy objective does not win by luck."""
        if self.config.study.objectives:
            front = self.pareto()
            return front[0] if front else None
        records = self.records()
        sign = 1 if self.config.study.direction == "minimize" else -1
        done = [r for r in records if r.state == "COMPLETE" and "reevaluation_of" not in r.attrs and r.feasible]
        if not done:
            return None
        again: dict[int, list[float]] = {}
        for r in records:
            if r.state == "COMPLETE" and "reevaluation_of" in r.attrs:
                again.setdefault(int(r.attrs["reevaluation_of"]), []).append(r.value)
        if again:
            by_number = {r.number: r for r in done}
            means = []
            for number, values in again.items():
                if number in by_number:
                    rec = by_number[number]
                    vals = [rec.value, *values]
                    means.append((sum(vals) / len(vals), number, rec, vals))
            if means:
                mean, _, rec, vals = min(means, key=lambda m: (sign * m[0], m[1]))
                return replace(rec, value=mean, attrs={**rec.attrs, "evaluations": vals})
        return min(done, key=lambda r: (sign * r.value, r.number))

    def pareto(self) -> list[TrialRecord]:
        """Several objectives: the Pareto set, the feasible complete trials no other feasible
        complete trial dominates (trials with equal values all kept), ordered by the first
        objective. (``best()`` is its first trial.)"""
        done = [r for r in self.records() if r.state == "COMPLETE" and r.values is not None and r.feasible]
        if not done:
            return []
        Y = [signed(self.config.study.directions, r.values) for r in done]
        front = [r for r, keep in zip(done, non_dominated(Y)) if keep]
        return sorted(front, key=lambda r: (signed(self.config.study.directions, r.values), r.number))

    def reference_point(self) -> list[tuple[float, str]] | None:
        """Several objectives: the point the hypervolume is measured from, per objective
        (value, source): the base model's value of its metric when the study scored one
        (source "base"), else the worst value of the feasible complete trials ("worst").
        None before any such trial."""
        cfg = self.config.study
        done = [r.values for r in self.records() if r.state == "COMPLETE" and r.values is not None and r.feasible]
        if not cfg.objectives or not done:
            return None
        base = self.base()
        ref = []
        for i, (o, d) in enumerate(zip(cfg.objectives, cfg.directions)):
            b = None if base is None else metric_value(o.metric, base[0], base[1], None)
            column = [v[i] for v in done]
            ref.append((b, "base") if b is not None else (max(column) if d == "minimize" else min(column), "worst"))
        return ref

    def hypervolume(self) -> float | None:
        """Several objectives: the hypervolume of the Pareto set against ``reference_point()``
        (in the objectives' units; maximised objectives negated), None before any trial."""
        ref = self.reference_point()
        if ref is None:
            return None
        d = self.config.study.directions
        return hypervolume([signed(d, r.values) for r in self.pareto()], signed(d, [v for v, _ in ref]))

    def importances(self, method: str) -> dict[str, float]:
        """Optuna's parameter importances over the complete trials, each hyperparameter's share
        of the objective's variance (they sum to 1). ``method``: "fANOVA" (a random forest's
        functional ANOVA, seed 0) or "PED-ANOVA". Raises what Optuna raises when the trials
        cannot tell (too few, too few distinct values)."""
        evaluators = {"fANOVA": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
                      "PED-ANOVA": lambda: optuna.importance.PedAnovaImportanceEvaluator()}
        if method not in evaluators:
            raise ValueError(f"importance method {method!r} is unknown; use one of: {', '.join(evaluators)}")
        imp = optuna.importance.get_param_importances(self.optuna_study, evaluator=evaluators[method]())
        return {k: float(v) for k, v in imp.items()}

    def counts(self) -> dict[str, int]:
        c = {"COMPLETE": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0, "PRUNED": 0, "interrupted": 0}
        for r in self.records():
            if r.interrupted:
                c["interrupted"] += 1
            elif "reevaluation_of" in r.attrs:  # outside the budget
                c["reevaluations"] = c.get("reevaluations", 0) + (r.state in ("COMPLETE", "FAIL"))
            else:
                c[r.state] = c.get(r.state, 0) + 1
        return c


def _record(t: FrozenTrial) -> TrialRecord:
    ua = t.user_attrs
    done = t.state == TrialState.COMPLETE and t.values is not None
    value = t.values[0] if done else None
    cons = t.system_attrs.get(_CONSTRAINTS_KEY)
    return TrialRecord(t.number, t._trial_id, t.state.name, value, dict(t.params), ua.get("candidate_id"),
                       bool(ua.get("interrupted", False)), dict(ua), dict(t.intermediate_values),
                       t.datetime_start.timestamp() if t.datetime_start else None,
                       t.datetime_complete.timestamp() if t.datetime_complete else None,
                       list(t.values) if done and len(t.values) > 1 else None,
                       None if cons is None else [float(c) for c in cons])


def _changed(name: str, old_json: str, config: Config) -> str:
    return (f"study '{name}' exists with a different configuration ({_diff(old_json, config)}); "
            "run with --overwrite to replace it, or set another [study] name (from Python: overwrite=True, "
            "or another study_name=)")


def stored_difference(config: Config) -> str | None:
    """What ``Study.open`` would refuse because a study of this name is stored with another
    configuration, found without creating or changing anything; None when the storage, or the
    study in it, does not exist yet or matches. For ``check``: a run finds the same when it
    opens the study (``_open_or_create``), on the storage it already holds."""
    from llmhpo.storage import file_path, has_optuna_tables

    url, name = config.study.storage, config.study.name
    path = file_path(url)
    if url is None or url == "sqlite:///:memory:" or (path is not None and not path.exists()):
        return None
    if not url.startswith("journal://") and not has_optuna_tables(url):
        return None  # a database the run will make Optuna's tables in
    try:
        storage = open_storage(url, read_only=True)
        study_id = storage.get_study_id_from_name(name)
        old = storage.get_study_system_attrs(study_id)
    except Exception:  # no such study; anything else about the storage is check_storage's to say
        return None
    if HASH_KEY in old and old[HASH_KEY] != config.search_hash():
        return _changed(name, old[CONFIG_KEY], config)
    return None


def _diff(old_json: str, new: Config) -> str:
    old, cur = search_part(json.loads(old_json)), search_part(new.to_dict())
    keys = []
    for section in sorted(set(old) | set(cur)):
        a, b = old.get(section), cur.get(section)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            if isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b)):
                    if json.dumps(a.get(k), sort_keys=True, default=str) != json.dumps(b.get(k), sort_keys=True, default=str):
                        keys.append(f"{section}.{k}")
            else:
                keys.append(section)
    return "changed: " + ", ".join(keys[:5]) if keys else "changed"
