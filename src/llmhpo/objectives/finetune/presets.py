"""Search-space presets of the fine-tuning objective, by name (``[space] preset = "paper"``)."""

from __future__ import annotations

from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.space import Float, Int, SearchSpace


def paper_space() -> SearchSpace:
    """The report's Table 3.1: the five LoRA fine-tuning hyperparameters."""
    return SearchSpace(
        [
            Float("learning_rate", 1e-10, 1e-1, log=True, default=2e-4),
            Int("lora_rank", 2, 32, default=8),
            Int("lora_alpha", 16, 64, default=16),
            Float("lora_dropout", 0.0, 0.5, default=0.05),
            Float("weight_decay", 1e-3, 1e-1, log=True, default=1e-2),
        ]
    )


PRESETS = {"paper": paper_space}


def preset(name: str) -> SearchSpace:
    """The preset called ``name``; ConfigError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"[space] preset = {name!r} is unknown{did_you_mean(name, PRESETS)}; "
                          f"available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
