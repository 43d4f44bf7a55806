"""Search-space presets of the fine-tuning objective, by name (``[space] preset = "paper"``),
and the built-in LoRA prior that comes with the paper preset (docs/configuration.md,
"Priors", lists the published practice behind each value)."""

from __future__ import annotations

from dataclasses import replace

from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.priors import Prior
from llmhpo.space import Float, Int, SearchSpace

#: where published LoRA practice puts good values, wide: a run's best learning rate moves with
#: its length and model size. Log variables' spreads are in decades.
LORA_PRIOR: dict[str, Prior] = {
    # LoRA (Hu et al. 2021) 2e-4..5e-4; QLoRA (Dettmers et al. 2023) 2e-4 up to 13B, 1e-4 above;
    # Biderman et al. 2024 best at 2e-4..5e-4
    "learning_rate": Prior(2e-4, 1.0),
    "lora_rank": Prior(8, 8),  # Hu et al. 2021: small ranks (1..8) suffice; 8..16 common
    "lora_alpha": Prior(32, 16),  # about twice the rank (Raschka 2023)
    "lora_dropout": Prior(0.05, 0.1),  # QLoRA: 0.1 up to 13B, 0.05 for 33B and 65B
    "weight_decay": Prior(1e-2, 0.5),  # AdamW's common 0.01
}


def paper_space(prior: bool = True) -> SearchSpace:
    """The report's Table 3.1: the five LoRA fine-tuning hyperparameters; ``prior``: with the
    built-in LoRA prior (``LORA_PRIOR``) on them."""
    space = [
        Float("learning_rate", 1e-10, 1e-1, log=True, default=2e-4),
        Int("lora_rank", 2, 32, default=8),
        Int("lora_alpha", 16, 64, default=16),
        Float("lora_dropout", 0.0, 0.5, default=0.05),
        Float("weight_decay", 1e-3, 1e-1, log=True, default=1e-2),
    ]
    return SearchSpace([replace(v, prior=LORA_PRIOR[v.name]) if prior else v for v in space])


PRESETS = {"paper": paper_space}


def preset(name: str) -> SearchSpace:
    """The preset called ``name`` (with its built-in prior); ConfigError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"[space] preset = {name!r} is unknown{did_you_mean(name, PRESETS)}; "
                          f"available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
