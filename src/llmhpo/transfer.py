"""Warm starts from earlier studies (``[warm_start] from``): their complete trials, matched by
parameter name and mapped into this study's space, guide the search without counting against
its budget (``use = "data"``) or are evaluated first (``use = "design"``).

The sources are read-only inputs, read again at every start of a run: nothing of them is
written into this study but one line saying which were used (``Study.note_warm_start``).
Mapping: a parameter this space lacks is ignored; a variable of this space a source lacks
takes its ``default`` (or the centre of its range, ``SearchSpace.encode(fill_defaults=True)``);
a value of a variable inactive under the trial's other values (this space's ``when``; the
source may have searched it unconditionally) is ignored; a trial with a value outside this
space (a range, a categorical choice) is skipped and counted. Values are turned into "lower
is better" with the source's own direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmhpo._tables import storage_url
from llmhpo.config import Config
from llmhpo.errors import ConfigError, StudyError
from llmhpo.optimizers._gp import standardise
from llmhpo.space import Int, SearchSpace

#: configurations evaluated first with ``use = "design"`` by an optimiser without ``n_init``
DESIGN_SIZE = 5


@dataclass
class Source:
    """One earlier study's usable trials. X: (n, d) points of [0, 1]^d (snapped to this space's
    configurations); y: (n,) values, lower is better (the source's sign);
    numbers: the source's trial numbers."""

    label: str  # "study 'name' in URL"
    X: np.ndarray
    y: np.ndarray
    numbers: list[int]
    skipped: int  # complete trials outside this space
    given: str = ""  # the source as [warm_start] from lists it
    not_finite: int = 0  # complete trials whose value is inf or nan (a diverged run): not read

    def summary(self) -> dict[str, Any]:
        return {"source": self.label, "trials": len(self.y), "skipped": self.skipped, "given": self.given,
                **({"not_finite": self.not_finite} if self.not_finite else {})}


@dataclass
class Transfer:
    """What ``[warm_start] from`` gives a run: its sources, and how they are used."""

    use: str
    sources: list[Source] = field(default_factory=list)
    #: sources whose file is gone since the study began: a resume goes on without them
    gone: list[str] = field(default_factory=list)

    def groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(X (n, d), y (n,)) per source: the optimiser's prior data (``Optimizer.set_earlier``)."""
        return [(s.X, s.y) for s in self.sources if len(s.y)]

    def design(self, k: int) -> list[tuple[np.ndarray, str]]:
        """The best ``k`` distinct configurations over every source, best first, as (x (d,),
        "trial N of LABEL"). Sources are compared by z-score (each on its own scale)."""
        ranked = []
        for s in self.sources:
            z = standardise(s.y)[0]
            ranked += [(float(z[i]), j, i, s) for j, i in enumerate(np.argsort(s.y, kind="stable"))]
        out: list[tuple[np.ndarray, str]] = []
        for _, _, i, s in sorted(ranked, key=lambda r: (r[0], r[1])):
            if len(out) == k:
                break
            if all(np.max(np.abs(x - s.X[i])) > 1e-9 for x, _ in out):
                out.append((s.X[i].copy(), f"trial {s.numbers[i]} of {s.label}"))
        return out

    def prime(self, optimizer: Any, config: Config) -> None:
        """Before the optimiser's state is loaded: its prior data (use = "data"), or the number
        of configurations that use = "design" evaluates first."""
        if self.use == "data":
            optimizer.set_earlier(self.groups())
        else:
            optimizer.set_earlier([], designed=len(self.design(design_size(config))))

    def line(self) -> str:
        """One line for the run's start."""
        return "warm start from " + describe(self.record())

    def record(self) -> dict[str, Any]:
        """What the study keeps of it (a study user attribute)."""
        return {"use": self.use, "sources": [s.summary() for s in self.sources],
                **({"gone": list(self.gone)} if self.gone else {})}


def describe(record: dict[str, Any]) -> str:
    """A study's ``warm_start_from`` record (``Transfer.record``) in one line: ``status`` and
    the report show it."""
    def skipped(s: dict[str, Any]) -> str:
        why = [f"{s['skipped']} outside this space"] if s.get("skipped") else []
        why += [f"{s['not_finite']} with a value that is not finite"] if s.get("not_finite") else []
        return f" ({', '.join(why)}, skipped)" if why else ""

    parts = [f"{s['source']}: {s['trials']} trials{skipped(s)}" for s in record["sources"]]
    queued = "; what it queued before still runs" if record["use"] == "design" else ""  # data queues nothing
    gone = [f"{g}: gone since the study began (no longer read{queued})" for g in record.get("gone", [])]
    return "; ".join(parts + gone) + f" (use = \"{record['use']}\")"


def design_size(config: Config) -> int:
    """Configurations use = "design" evaluates first: bo's initial design, else ``DESIGN_SIZE``."""
    return int(config.optimizer_options.get("n_init", 10)) if config.optimizer == "bo" else DESIGN_SIZE


def load(config: Config, errors: list[ConfigError] | None = None, overwrite: bool = False) -> Transfer | None:
    """Read every source of ``config.warm_from`` (None without one). Raises ConfigError, one
    line each, before any compute: a storage that does not exist, a study it does not hold
    (naming those it holds), a study of several objectives, no variable in common with this
    space, or no complete trial that fits it. A source whose file is gone when a stored study
    resumes is skipped and named (``Transfer.gone``): the study goes on without its trials.
    errors: a list to collect every source's problem in (``llmhpo check``) instead of raising
    the first; overwrite: the stored study is replaced, not resumed (every source must be there)."""
    wf = config.warm_from
    if wf is None:
        return None
    out = Transfer(wf.use)
    for raw, name in wf.sources:
        try:
            try:
                out.sources.append(_read(config, storage_url(raw, Path(config.base_dir)), name, wf.max_trials, raw))
            except SourceGone:
                if overwrite or str(raw) not in _began_with(config):
                    raise
                out.gone.append(str(raw))
        except ConfigError as e:
            if errors is None:
                raise
            errors.append(e)
    return out


class SourceGone(ConfigError):
    """A source's file is not there."""


def _began_with(config: Config) -> list[str]:
    """The sources (as ``from`` lists them) the stored study recorded at its last start
    (``Transfer.record``, with each source as given and those already gone); [] for a new
    study. Only these may be gone on a resume."""
    from llmhpo.storage import file_path, open_storage

    path = file_path(config.study.storage)
    if config.study.storage is None or (path is not None and not path.is_file()):
        return []
    storage = open_storage(config.study.storage, read_only=True)
    for s in storage.get_all_studies():
        if s.study_name == config.study.name:
            record = s.user_attrs.get("warm_start_from") or {}
            return [*(x.get("given", "") for x in record.get("sources", [])), *record.get("gone", [])]
    return []


def _read(config: Config, url: str, name: str | None, max_trials: int | None, raw: Any = None) -> Source:
    """One source's complete trials mapped into ``config.space``; name None: the study named
    as this one, or the only study the storage holds. Opened read-only: nothing of the
    source's file changes."""
    import optuna
    from optuna.trial import TrialState

    from llmhpo.storage import PATHS_HINT, check_sqlite_file, file_path, open_storage

    path = file_path(url)
    if path is not None:  # a file: read, never created (opening a journal that is not there makes one)
        if path.is_dir():
            raise ConfigError(f"[warm_start] from: {path} is a folder; give an earlier study's storage file")
        if not path.is_file():
            raise SourceGone(f"[warm_start] from: {path} does not exist; give the path of an earlier "
                        f"study's storage ({PATHS_HINT}; from Python, relative to the working folder)")
        if url.startswith("sqlite:///"):
            try:
                check_sqlite_file(path, "[warm_start] from")
            except StudyError as e:
                journal = " (an Optuna journal file? write journal:///PATH)" \
                    if "SQLite" in str(e) and path.suffix in (".log", ".jsonl", ".journal") else ""
                raise ConfigError(f"[warm_start] from: {e}{journal}") from None
    try:
        storage = open_storage(url, read_only=True)
    except StudyError as e:
        raise ConfigError(f"[warm_start] from: {e}") from None
    names = [s.study_name for s in storage.get_all_studies()]
    if name is None:  # not named: the one study there is (besides this one), else this study's name
        others = [n for n in names if not (url == config.study.storage and n == config.study.name)]
        name = others[0] if len(others) == 1 else config.study.name
    if url == config.study.storage and name == config.study.name:
        raise ConfigError(f"[warm_start] from: {raw or url!r} is this study itself; name an earlier study "
                          "(from = [{ storage = ..., study = \"name\" }])")
    label = f"study '{name}' in {url}"
    if name not in names:
        held = ", ".join(names) if names else "no study"
        raise ConfigError(f"[warm_start] from: no study '{name}' in {url} (it holds: {held}); "
                          "name one with from = [{ storage = ..., study = \"name\" }] "
                          "(from Python: warm_start_from=(storage, \"name\"))")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    if len(study.directions) > 1:
        raise ConfigError(f"[warm_start] from: {label} has {len(study.directions)} objectives; "
                          "warm starts read studies of one objective")
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1.0
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if max_trials is not None:
        trials = trials[-max_trials:]  # the most recent
    finite = [t for t in trials if t.value is not None and np.isfinite(t.value)]
    not_finite, trials = len(trials) - len(finite), finite
    space = config.space
    seen = {k for t in trials for k in t.params}
    if trials and not seen & set(space.names):
        raise ConfigError(f"[warm_start] from: {label} has no variable in common with this space "
                          f"(it has {', '.join(sorted(seen))}; this space {', '.join(space.names)})")
    X, y, numbers, skipped = [], [], [], 0
    for t in trials:
        mine = {k: _native(space, k, v) for k, v in t.params.items() if k in space.names}
        try:
            x = space.snap(space.encode(mine, fill_defaults=True, drop_inactive=True))
        except ConfigError:  # a value outside this space's range or choices
            skipped += 1
            continue
        X.append(x)
        y.append(sign * float(t.value))
        numbers.append(t.number)
    if not y:
        why = f" ({skipped} outside this space)" if skipped else ""
        fix = "raise [warm_start] max_trials or remove it from [warm_start] from" if max_trials is not None \
            else "remove it from [warm_start] from"
        what = "no complete trial that fits this space" if trials else "no complete trial with a finite value"
        raise ConfigError(f"[warm_start] from: {label} has {what}{why}; {fix}")
    return Source(label, np.asarray(X, dtype=float).reshape(len(X), space.dim), np.asarray(y), numbers, skipped,
                  str(raw) if raw is not None else url, not_finite)


def _native(space: SearchSpace, name: str, value: Any) -> Any:
    """A source's value as this space's variable takes it: a float rounded to the nearest
    integer for an integer variable (a source that searched it as a float; the range is
    checked on the rounded value)."""
    if isinstance(space.variables[space.names.index(name)], Int) and isinstance(value, float) \
            and np.isfinite(value):
        return int(round(value))
    return value
