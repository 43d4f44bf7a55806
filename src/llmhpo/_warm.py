"""The ``warm_start`` table of a study file: ``[[warm_start]]`` (an array: configurations
evaluated first) or ``[warm_start]`` (a table: ``from`` earlier studies, ``configs``, ``use``,
``max_trials``); TOML allows one of the two forms in a file. The sources are read by
``llmhpo.transfer``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from llmhpo._tables import expect, no_unknown, storage_url
from llmhpo.errors import ConfigError
from llmhpo.space import SearchSpace


@dataclass(frozen=True)
class WarmFrom:
    """[warm_start] from: earlier studies whose complete trials guide this one (``llmhpo.transfer``).

    sources: (storage URL as written, study name or None: the only study there, else this one's name); relative
    paths are resolved against the config's ``base_dir`` when the sources are read, so a moved
    study keeps its hash. use: "data" (observations for model-based optimisers, outside the
    budget) or "design" (the best ones evaluated first, as this study's trials); left out in
    the file: "data" for a single-objective bo study, "design" otherwise.
    max_trials: the most recent trials read per source (None: all).
    """

    sources: tuple[tuple[str, str | None], ...]
    use: str = "data"
    max_trials: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": [s if n is None else {"storage": s, "study": n} for s, n in self.sources],
                               "use": self.use}
        if self.max_trials is not None:
            out["max_trials"] = self.max_trials
        return out



def toml_hint(error: str) -> str:
    """The fix for a TOML error this project's own tables invite: both forms of warm_start."""
    if "('warm_start',)" in error:
        return ("; [[warm_start]] and [warm_start] are two forms of one table: with [warm_start] from, "
                "give the configurations as [warm_start] configs = [{ ... }]")
    return ""


def warm_start_table(ws: Any, space: SearchSpace, base_dir: Path) -> tuple[tuple[dict[str, Any], ...], WarmFrom | None]:
    """[[warm_start]] (configurations the optimiser is told first, each checked against the
    space) or the table [warm_start] (``from`` earlier studies, ``configs``, ``use``, ``max_trials``)."""
    warm_from = None
    if isinstance(ws, Mapping):
        no_unknown("warm_start", ws, {"from", "study", "configs", "use", "max_trials"})
        warm_from = _warm_from(ws, base_dir)
        ws = ws.get("configs", [])
        what = "[warm_start] configs"
        if not isinstance(ws, list) or not all(isinstance(w, Mapping) for w in ws):
            raise ConfigError("[warm_start] configs must be a list of tables, e.g. configs = [{ learning_rate = 2e-4 }]")
    else:
        what = "[[warm_start]]"
        if not isinstance(ws, list) or not all(isinstance(w, Mapping) for w in ws):
            raise ConfigError("warm_start must be a list of tables: write [[warm_start]] then name = value lines")
    for i, w in enumerate(ws):
        try:
            space.encode(w, fill_defaults=True)
        except ConfigError as e:
            raise ConfigError(f"{what} number {i + 1}: {e}") from None
    return tuple(dict(w) for w in ws), warm_from


def _warm_from(ws: Mapping[str, Any], base_dir: Path) -> WarmFrom | None:
    """[warm_start] from / study / use / max_trials (None without ``from``). A storage given as a
    string holds the study named by ``study`` or, without it, its only study (else one named as this)."""
    use = expect("warm_start", ws, "use", (str,), None)  # None: chosen by the optimiser (_parse)
    if use not in (None, "data", "design"):
        raise ConfigError(f"[warm_start] use = {use!r} must be \"data\" (the earlier trials inform the model) "
                          "or \"design\" (the best of them are evaluated first)")
    max_trials = expect("warm_start", ws, "max_trials", (int,), None)
    if max_trials is not None and max_trials < 1:
        raise ConfigError(f"[warm_start] max_trials = {max_trials} must be at least 1 (leave it out for all)")
    if "from" not in ws:
        if "use" in ws or "max_trials" in ws or "study" in ws:
            raise ConfigError("[warm_start] use, study and max_trials need from = [\"sqlite:///earlier.db\", ...]")
        return None
    items = ws["from"]
    if not isinstance(items, list) or not items:
        raise ConfigError("[warm_start] from must be a non-empty list of storages, e.g. from = [\"sqlite:///earlier.db\"]"
                          " or [{ storage = \"earlier.db\", study = \"name\" }]")
    default = expect("warm_start", ws, "study", (str,), None)
    sources = []
    for item in items:
        if isinstance(item, str):
            url, name = item, default
        elif isinstance(item, Mapping):
            no_unknown("warm_start.from", item, {"storage", "study"})
            url = expect("warm_start.from", item, "storage", (str,), required=True)
            name = expect("warm_start.from", item, "study", (str,), None)
        else:
            raise ConfigError(f"[warm_start] from: {item!r} must be a storage URL or {{ storage = ..., study = ... }}")
        if not url.strip():
            raise ConfigError("[warm_start] from: a storage is empty; give a path or URL such as \"sqlite:///earlier.db\"")
        storage_url(url, base_dir)  # resolved again when read: the stored config keeps what was written
        sources.append((url, name))
    return WarmFrom(tuple(sources), use, max_trials)
