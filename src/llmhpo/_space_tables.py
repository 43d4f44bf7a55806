"""``[space]`` as TOML gives it -> a ``SearchSpace``: a preset, or the objective kind's own
space, and the variables the tables add or change.

A table with a ``type`` defines a variable (``space.variable_from_dict``); one without,
holding only ``prior``, ``default`` and ``when``, changes that key of a variable the preset
(or the kind's own space) has. ``[space] prior = "none"`` drops the priors a preset comes
with; ``"builtin"`` (the default) keeps them, and said explicitly also asks for the kind's
built-in prior where its space has none of its own (``ObjectiveKind.builtin_priors``; a kind
without one: nothing more).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.space import SearchSpace, variable_from_dict

#: the keys a table may change on a variable it does not define
CHANGES = ("prior", "default", "when")


def build_space(sp: dict[str, Any], kind, spec) -> SearchSpace:
    """[space] (a dict, consumed) for an objective ``kind`` with its ``spec``."""
    asked = sp.pop("prior", None)
    builtin = "builtin" if asked is None else asked
    if builtin not in ("builtin", "none"):
        raise ConfigError(f"[space] prior = {builtin!r} must be \"builtin\" (a preset's own prior) or \"none\"; "
                          "a variable's prior goes in its table: [space.<name>] prior = { mode = ..., spread = ... }")
    base, source = _base(sp, kind, spec)
    if builtin == "none":
        base = [replace(v, prior=None) for v in base]
    variables = {v.name: v for v in base}
    for name, table in sp.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[space] {name} must be a table such as [space.{name}] type = \"float\" low = 0 high = 1")
        if "type" in table or not table or not set(table) <= set(CHANGES):
            variables[name] = variable_from_dict(dict(table, name=name))  # its conditions are checked with the space
    for name, table in sp.items():  # then the changes, to any variable (a full table's too)
        if name not in variables:
            _no_such_variable(name, table, [*variables, *(n for n in sp if n not in variables)], source)
        if "type" not in table:
            variables[name] = replace(variables[name], **table)
    own = kind.builtin_priors(spec) if asked == "builtin" else {}  # the same names keep them, narrowed or not
    for name, v in variables.items():
        if v.prior is None and own.get(name) is not None:
            try:  # a range narrowed past the prior (its mode outside, or far narrower than it) goes without
                variables[name] = replace(v, prior=own[name])
            except ConfigError:
                pass
    return SearchSpace(list(variables.values()))


def _no_such_variable(name: str, table: Mapping[str, Any], names: list[str], source: str) -> None:
    """The error for a table that changes a variable nobody defines."""
    names = [n for n in names if n != name]
    known = f" (it has {', '.join(names)}){did_you_mean(name, names)}" if names else ""
    where = source or "[space]"
    why = "" if source else (" (a table with type replaces the objective's own space: add preset = ... to keep "
                             "a preset's variables)")
    raise ConfigError(f"[space.{name}] changes {', '.join(table)} of variable '{name}', but {where} has no such "
                      f"variable{known}{why}; give it type = ... and its range to add it")


def _base(sp: Mapping[str, Any], kind, spec) -> tuple[list, str]:
    """The variables the tables start from, and what they are ("preset 'paper'", "function
    lora_smollm2's own space"; "" when none): a preset, or the kind's own space when no table
    defines a variable (every table only changes one)."""
    if "preset" in sp:
        p = sp.pop("preset")
        if not isinstance(p, str):
            raise ConfigError(f"[space] preset = {p!r} must be a string such as \"paper\"")
        return list(kind.preset(spec, p).variables), f"preset '{p}'"
    if any(isinstance(t, Mapping) and "type" in t for t in sp.values()):
        return [], ""
    default = kind.default_space(spec)
    if default is None:
        if not sp:
            raise ConfigError(f"[space] is missing: a {kind.name} objective needs its search space, e.g. "
                              "[space.learning_rate] type = \"float\" low = 1e-5 high = 1e-1 log = true")
        return [], ""
    return list(default.variables), f"{kind.describe(spec)}'s own space"
