"""The error hierarchy: every message names the bad value and the fix."""

from __future__ import annotations


class LlmhpoError(Exception):
    """Base class of the errors llmhpo raises on purpose."""


class ConfigError(LlmhpoError, ValueError):
    """A study configuration (TOML, search space, options) is invalid."""


class StudyError(LlmhpoError, RuntimeError):
    """A stored study cannot be used as asked (config changed, study missing)."""


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
