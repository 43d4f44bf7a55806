"""One fine-tuning trial's time split (model load / train / val loss / eval), with the base
model cached in the worker versus reloaded for every trial, on SmolLM2-135M and the demo's
settings. usage: python benchmarks/trial_split.py [TRIALS]"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from llmhpo.objectives.finetune import FinetuneObjective  # noqa: E402
from llmhpo.demo import demo_config  # noqa: E402
from pathlib import Path  # noqa: E402

PARAMS = {"learning_rate": 1e-3, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05, "weight_decay": 0.01}


def main(trials: int) -> None:
    cfg = demo_config(Path("/tmp/llmhpo-trial-split"), trials, 1)
    out = {}
    for mode in ("cached", "reloaded"):
        spec = cfg.objective.resolved()
        obj = FinetuneObjective(replace(spec, model=replace(spec.model, reload_each_trial=(mode == "reloaded"))))
        t0 = time.time()
        obj.setup()
        first_setup = time.time() - t0
        rows = []
        for _ in range(trials):
            r = obj(PARAMS)
            rows.append({**{k: round(v, 2) for k, v in r.timings.items()},
                         "tokens_per_s": round(r.metrics["train_tokens_per_s"], 1),
                         "peak_memory_mb": round(r.metrics["peak_memory_mb"]), "value": r.value})
        out[mode] = {"first_setup_s": round(first_setup, 2), "task_index_s": round(obj.task_index_seconds, 2),
                     "trials": rows}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
