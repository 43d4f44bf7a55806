"""llmhpo: hyperparameter optimisation for LLM fine-tuning."""

from llmhpo.errors import ConfigError, LlmhpoError, StudyError, TrialFailed
from llmhpo.space import Categorical, Float, Int, SearchSpace

__version__ = "0.1.0"

__all__ = [
    "Categorical",
    "ConfigError",
    "Float",
    "Int",
    "LlmhpoError",
    "SearchSpace",
    "StudyError",
    "TrialFailed",
    "__version__",
]
