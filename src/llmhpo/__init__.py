"""llmhpo: hyperparameter optimisation for LLM fine-tuning."""

from llmhpo._version import __version__
from llmhpo.errors import ConfigError, LlmhpoError, StudyError, TrialFailed
from llmhpo.priors import Prior
from llmhpo.space import Categorical, Float, Int, SearchSpace


def __getattr__(name: str):
    # the API sits above the runner and the study: imported on first use, so that
    # `import llmhpo.space` (and `llmhpo status`) stays light
    if name == "optimize":
        from llmhpo.api import optimize

        return optimize
    if name in ("Result", "Fidelity"):
        import llmhpo.objectives

        return getattr(llmhpo.objectives, name)
    raise AttributeError(f"module 'llmhpo' has no attribute {name!r}")


__all__ = [
    "Categorical",
    "ConfigError",
    "Fidelity",
    "Float",
    "Int",
    "LlmhpoError",
    "Prior",
    "Result",
    "SearchSpace",
    "StudyError",
    "TrialFailed",
    "__version__",
    "optimize",
]
