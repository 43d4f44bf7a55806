"""The user's own Python objective: ``[objective] type = "python"`` with
``target = "package.module:function"`` or ``"file.py:function"`` (relative to the TOML's
folder), or a function handed to :func:`llmhpo.optimize`.

The function is called with the trial's params as keyword arguments and returns a number,
or a dict of numbers of which ``metric`` names the objective (the others are stored as the
trial's metrics), or a :class:`~llmhpo.objectives.Result`. Raising
:class:`~llmhpo.errors.TrialFailed` records the trial as failed with that reason.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from llmhpo.errors import ConfigError, ObjectiveSetupError, TrialFailed, did_you_mean
from llmhpo.objectives import ObjectiveKind, ParseContext, Result

_TARGET = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][\w.]*)$")


@dataclass(frozen=True)
class PythonSpec:
    kind: ClassVar[str] = "python"
    target: str  # "package.module:function" or "file.py:function", as written
    metric: str | None = None  # the objective's key when the function returns a dict
    #: the TOML's folder: a .py target is relative to it, and it goes first on sys.path for a
    #: module target; not stored, so a study resumes from a moved folder
    path: str | None = field(default=None, compare=False)
    #: the function itself, when given through the Python API; never stored
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"objective": {"target": self.target, "metric": self.metric}}


def load_target(spec: PythonSpec) -> Callable[..., Any]:
    """The function named by ``spec.target`` (imports the user's module)."""
    if spec.function is not None:
        return spec.function
    m = _TARGET.match(spec.target)
    module, attr = m.group("module"), m.group("attr")
    try:
        if module.endswith(".py"):
            module = str(Path(spec.path or ".", module).resolve())
            if not Path(module).is_file():
                raise ObjectiveSetupError(f"[objective] target = {spec.target!r}: no such file {module}")
            folder = str(Path(module).parent)  # its neighbours import as when it is run as a script
            if folder not in sys.path:
                sys.path.insert(0, folder)
            name = f"llmhpo_user_{Path(module).stem}"
            mod = sys.modules.get(name)
            if mod is None:
                loader = importlib.util.spec_from_file_location(name, module)
                mod = importlib.util.module_from_spec(loader)
                sys.modules[name] = mod  # before exec: a pickled function must find its module
                try:
                    loader.loader.exec_module(mod)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            if spec.path and spec.path not in sys.path:
                sys.path.insert(0, spec.path)
            mod = importlib.import_module(module)
    except ObjectiveSetupError:
        raise
    except ImportError as e:
        raise ObjectiveSetupError(f"[objective] target = {spec.target!r}: cannot import {module!r} ({e}); "
                                  "check the module name and that it is importable from the TOML's folder") from e
    except Exception as e:
        raise ObjectiveSetupError(f"[objective] target = {spec.target!r}: importing {module!r} raised "
                                  f"{type(e).__name__}: {e}") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ObjectiveSetupError(f"[objective] target = {spec.target!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ObjectiveSetupError(f"[objective] target = {spec.target!r} is not callable")
    return obj


def check_signature(fn: Callable[..., Any], names: list[str], where: str, conditional: Sequence[str] = ()) -> None:
    """ConfigError unless ``fn(**params)`` accepts exactly the space's names; those in
    ``conditional`` (variables with a ``when``, absent while inactive) need a default."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and C functions: find out at the first call
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    extra = [n for n in names if n not in accepted]
    if extra == ["fidelity"]:
        raise ConfigError(f"{where} takes no argument 'fidelity': with [fidelity] it is called with "
                          "fidelity=llmhpo.Fidelity(resource, value, max, checkpoint); add that parameter")
    if extra:
        raise ConfigError(f"{where} takes no argument '{extra[0]}' but the search space has it; "
                          f"add it to the function's parameters (it takes {sorted(accepted)}) or rename the variable")
    missing = [p.name for p in params if p.default is p.empty and p.name not in names
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise ConfigError(f"{where} needs argument '{missing[0]}' that the search space does not define; "
                          "add it to the space or give it a default")
    bare = [p.name for p in params if p.default is p.empty and p.name in conditional]
    if bare:
        raise ConfigError(f"{where}: '{bare[0]}' is conditional (its 'when' leaves it out of the call while "
                          f"inactive); give it a default, e.g. {bare[0]}=None")


class PythonObjective:
    """Calls the user's function with the trial's params."""

    def __init__(self, spec: PythonSpec):
        self.spec = spec
        self.fn = load_target(spec)

    def __call__(self, params: dict[str, Any], fidelity=None) -> Result:
        t0 = time.time()
        out = self.fn(**params) if fidelity is None else self.fn(**params, fidelity=fidelity)
        seconds = time.time() - t0
        if isinstance(out, Result):
            out.timings.setdefault("call", seconds)
            return out
        if isinstance(out, Mapping):
            metrics = {str(k): _plain(v) for k, v in out.items()}
            if self.spec.metric is None:
                raise TrialFailed(f"the objective returned a dict ({', '.join(metrics)}); name the objective "
                                  "with metric = \"KEY\" ([objective] metric, or optimize(metric=...))")
            if self.spec.metric not in metrics:
                raise TrialFailed(f"the objective's dict has no key {self.spec.metric!r} (metric); "
                                  f"it has: {', '.join(metrics)}")
            # kept among the metrics too: several objectives and constraints read it there
            value = _number(metrics[self.spec.metric], self.spec.metric)
            return Result(value, metrics, {"call": seconds})
        return Result(_number(out, "the returned value"), {}, {"call": seconds})


def _number(v: Any, what: str) -> float:
    try:
        value = float(v)
    except (TypeError, ValueError):
        raise TrialFailed(f"{what} is {type(v).__name__} {v!r}, not a number") from None
    if not math.isfinite(value):
        raise TrialFailed(f"{what} is {value}")
    return value


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v


class PythonKind(ObjectiveKind):
    name = "python"

    def parse(self, objective, tables, ctx: ParseContext) -> PythonSpec:
        extra = sorted(set(objective) - {"target", "metric"})
        if extra:
            raise ConfigError(f"[objective] has an unknown key '{extra[0]}'{did_you_mean(extra[0], ('target', 'metric'))} "
                              "for type \"python\"; "
                              "allowed keys: type, target, metric")
        target = objective.get("target")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise ConfigError(f"[objective] target = {target!r} must name a function as \"package.module:function\" "
                              "or \"file.py:function\"")
        metric = objective.get("metric")
        if metric is not None and not isinstance(metric, str):
            raise ConfigError(f"[objective] metric = {metric!r} must be a string (the key of the returned dict)")
        return PythonSpec(target, metric, str(ctx.base_dir.resolve()))

    def for_objectives(self, spec: PythonSpec, metrics: list[str]) -> PythonSpec:
        """A dict's value is read from the first objective's key unless ``metric`` names one
        (as ``optimize(metrics=...)`` does): several objectives are keys of one dict."""
        return spec if spec.metric is not None else replace(spec, metric=metrics[0])

    def preflight(self, spec: PythonSpec, space, devices=(), fidelity=None, remote=False) -> list[str]:
        fn = load_target(spec)
        # with [fidelity] the function also gets fidelity=llmhpo.Fidelity(...)
        check_signature(fn, space.names + (["fidelity"] if fidelity else []), f"[objective] target {spec.target!r}",
                        [v.name for v in space if v.when])
        return [f"objective: {spec.target}" + (f" (metric {spec.metric})" if spec.metric else "")]

    def fidelity_resources(self, spec) -> tuple[str, ...]:
        return ("*",)  # the function grows whatever it names

    def integer_resource(self, spec, resource: str) -> bool:
        return resource != "epochs"  # the one name that conventionally stops part-way

    def factory(self, spec: PythonSpec):
        return functools.partial(PythonObjective, spec)

    def describe(self, spec: PythonSpec) -> str:
        return f"python {spec.target}"
