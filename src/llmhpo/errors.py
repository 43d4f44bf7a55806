"""The error hierarchy: every message names the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmhpoError(Exception):
    """Base class of the errors llmhpo raises on purpose."""


class ConfigError(LlmhpoError, ValueError):
    """A study configuration (TOML, search space, options) is invalid."""


class StudyError(LlmhpoError, RuntimeError):
    """A stored study cannot be used as asked (config changed, study missing)."""


class SeveralStudies(StudyError):
    """A storage that holds several studies, given where one study is needed."""

    def __init__(self, storage_url: str, names: list[str]):
        super().__init__(f"{storage_url} holds several studies ({', '.join(names)}); pass --study NAME")
        self.storage_url, self.names = storage_url, names


class ObjectiveSetupError(LlmhpoError, RuntimeError):
    """A model, dataset or task needed by the objective cannot be loaded."""


class TrialFailed(LlmhpoError, RuntimeError):
    """Raised inside an objective: the trial is recorded as FAIL with this reason."""


class SetupProblems(ObjectiveSetupError):
    """Everything found missing before the first trial, at once: ``problems`` holds one
    line for each (naming the key and the fix); the message is those lines."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'soo'?)`` when ``name`` is a near miss of one of ``choices`` (a typo,
    another case, ``-`` for ``_``), else ``""``: messages add it next to the bad name and
    still list every valid one."""
    if not isinstance(name, str):
        return ""
    # compare in one spelling, answer with the name as it is written
    folded = {c.lower().replace("-", "_"): c for c in choices}
    close = difflib.get_close_matches(name.lower().replace("-", "_"), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""
