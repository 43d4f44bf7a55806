"""Objectives: what one trial computes, and the one registry of objective kinds.

An objective is a plain callable ``params -> Result`` that runs inside a worker; it knows
nothing of optimisers or storage. Each kind (``function``, ``sleep``, ``python``,
``finetune``) is one :class:`ObjectiveKind` that owns the TOML tables it reads and their
parsing into a frozen spec, its default search space and direction, the checks made before
the first trial, how a worker builds the objective, and what ``best --export`` writes.
Nothing outside this package asks which kind a study uses. A running objective may say how
far it is with :func:`progress` (shown by the run's progress bar or log).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from llmhpo._progress import progress
from llmhpo.errors import ConfigError, TrialFailed, did_you_mean


@dataclass
class Result:
    """What one trial produced. value: the objective; metrics: everything else measured;
    timings: seconds per phase."""

    value: float
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.value = float(self.value)
        if not math.isfinite(self.value):
            raise TrialFailed(f"objective value is {self.value}")


@dataclass(frozen=True)
class Fidelity:
    """What a multi-fidelity call asks of an objective: bring the configuration to
    ``value`` units of ``resource`` in total (of at most ``max``), continuing from the
    checkpoint in the folder ``checkpoint`` when there is one, and leave its own checkpoint
    there for a later, larger value. An objective called with ``fidelity`` returns its score
    at ``value``."""

    resource: str
    value: float
    max: float
    checkpoint: str


@dataclass(frozen=True)
class ParseContext:
    """What a kind needs to parse its tables. base_dir: relative paths in the config are
    relative to it (the TOML file's folder, or the current directory)."""

    base_dir: Path
    study_name: str

    def path(self, value: str) -> str:
        """An absolute path for a path written in the config."""
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())


class ObjectiveKind:
    """One kind of objective. Subclasses set ``name`` (the ``[objective] type``), ``tables``
    (top-level TOML tables they own besides ``[objective]``) and ``default_direction``, and
    implement ``parse`` and ``factory``; the rest has defaults."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]] = ()
    default_direction: ClassVar[str] = "minimize"
    #: run even a single worker in a process of its own (executor "auto"), so that a trial
    #: killed for memory or crashing in native code fails alone instead of ending the driver
    isolate: ClassVar[bool] = False

    def reseed(self, spec, params: dict[str, Any], seed: int) -> dict[str, Any]:
        """The params of one more evaluation of a configuration with another ``seed``
        (``[study] reevaluate``). Default: the same params (an objective with its own
        randomness, e.g. noise, draws anew)."""
        return dict(params)

    def parse(self, objective: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]], ctx: ParseContext):
        """The kind's spec from ``[objective]`` (without ``type``) and its own tables: a frozen,
        picklable dataclass with a class attribute ``kind`` (this kind's name) and a method
        ``to_tables()`` giving it back as TOML tables (``objective`` and the kind's own).
        Cheap and side-effect free (no model, no import of user code): stored studies are
        re-read with it. Raises ConfigError naming the key and the fix."""
        raise NotImplementedError

    def default_space(self, spec):
        """The SearchSpace used when the config has no ``[space]``; None when one is required."""
        return None

    def for_objectives(self, spec, metrics: list[str]):
        """The spec of a study whose ``[study] objectives`` are ``metrics`` (the keys of the
        result's metrics, in order). Default: unchanged."""
        return spec

    def builtin_priors(self, spec) -> dict[str, Any]:
        """name -> ``llmhpo.priors.Prior``: what ``[space] prior = "builtin"`` puts on the
        variables of this kind's own space that have none. Default: nothing."""
        return {}

    def preset(self, spec, name: str):
        """The SearchSpace that ``[space] preset = name`` names. Default: this kind has none."""
        raise ConfigError(f"[space] preset = {name!r}: a {self.name} objective has no presets; "
                          "list the variables as [space.<name>] tables instead")

    def check_space(self, spec, space) -> None:
        """ConfigError when the space does not fit the objective."""

    def preflight(self, spec, space, devices: tuple[str, ...] = (), fidelity=None, remote: bool = False) -> list[str]:
        """Everything that would make every trial fail, checked once before the first trial
        (may load models, data, user code). fidelity: the study's FidelityConfig, if any;
        remote: the trials run on other machines (a Ray cluster), whose GPUs and packages
        this one cannot check. Returns lines describing what was found."""
        return []

    def scores_base(self, spec) -> bool:
        """Whether the study scores the untuned objective once (the objective's ``base()``,
        e.g. the base model without an adapter), as the reference every trial is compared with."""
        return False

    def fidelity_resources(self, spec) -> tuple[str, ...]:
        """The resources this objective can grow (``[fidelity] resource``), the default first;
        ``("*",)`` for any name; empty when it cannot be run at several fidelities."""
        return ()

    def check_fidelity(self, spec, r_min: float, r_max: float) -> None:
        """ConfigError when the objective cannot tell rungs r_min .. r_max apart. Default: it can."""

    def integer_resource(self, spec, resource: str) -> bool:
        """Whether ``resource`` counts whole units (steps), so that rungs are whole numbers;
        False for a resource that may stop part-way (epochs of data)."""
        return True

    def resource_params(self, spec, resource: str) -> tuple[str, ...]:
        """The params that a multi-fidelity call at ``resource`` sets itself, whatever was
        proposed: searching them would be silently undone, so the space may not hold them."""
        return ()

    def factory(self, spec) -> Callable[[], Callable[[dict[str, Any]], Result]]:
        """A picklable zero-argument callable that builds the objective inside a worker."""
        raise NotImplementedError

    def describe(self, spec) -> str:
        """A few words for `status` and reports."""
        return self.name

    def export(self, spec, record, out: Path, merge: bool = False) -> Path:
        """Write the best trial to ``out`` (``best --export``): its value and params as JSON."""
        import json

        from llmhpo.errors import LlmhpoError

        if merge:
            raise LlmhpoError(f"--merge merges a fine-tuned adapter into its model; a {self.name} study has none: "
                              "drop --merge")

        out.mkdir(parents=True, exist_ok=True)
        (out / "best.json").write_text(json.dumps(
            {"trial": record.number, "value": record.value, "params": record.params,
             "metrics": {k: v for k, v in (record.attrs.get("metrics") or {}).items() if k != "traceback"}},
            indent=1, default=str))
        return out


# type -> "module:Class"; a kind's module is imported when a study uses it (finetune's
# stays light: torch, transformers and lm-eval load inside its workers only)
_KINDS = {
    "function": "llmhpo.objectives.synthetic:FunctionKind",
    "sleep": "llmhpo.objectives.synthetic:SleepKind",
    "python": "llmhpo.objectives.python:PythonKind",
    "finetune": "llmhpo.objectives.finetune.kind:FinetuneKind",
}


def get_kind(name: str) -> ObjectiveKind:
    """The kind registered for ``[objective] type = name``."""
    if name not in _KINDS:
        raise ConfigError(f"[objective] type = {name!r} is unknown{did_you_mean(name, _KINDS)}; "
                          f"use one of: {', '.join(_KINDS)}")
    module, cls = _KINDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def all_tables() -> dict[str, str]:
    """Every kind-owned top-level table -> the kind that owns it."""
    return {t: name for name in _KINDS for t in get_kind(name).tables}


__all__ = ["Fidelity", "ObjectiveKind", "ParseContext", "Result", "all_tables", "get_kind", "progress"]
