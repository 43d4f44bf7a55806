"""``best --export DIR`` for a fine-tuning study: the best trial's adapter, its config and
metrics, optionally the base model with the adapter merged in."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from llmhpo.errors import LlmhpoError
from llmhpo.objectives.finetune.config import FinetuneConfig


def export_best(cfg: FinetuneConfig, record, out: Path, merge: bool = False) -> Path:
    """cfg: with absolute paths. record: the study's best trial (number, value, params, attrs)."""
    from llmhpo.objectives.finetune.model import portable_name

    metrics = record.attrs.get("metrics") or {}
    src = metrics.get("adapter_dir")
    if not src or not Path(src).is_dir():
        raise LlmhpoError(f"trial {record.number} has no saved adapter ({src or 'none recorded'}); "
                          "set [train] save_adapters = true and run it again")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = out / "adapter"
    if adapter.exists():
        shutil.rmtree(adapter)
    shutil.copytree(src, adapter)
    (out / "best.json").write_text(json.dumps(
        {"study": cfg.study_name, "trial": record.number, "value": record.value, "objective": cfg.eval.objective,
         "base_model": portable_name(cfg.model), "params": record.params,
         "metrics": {k: v for k, v in metrics.items() if k not in ("train_loss_curve", "traceback")}},
        indent=1, default=str))
    if merge:
        from peft import PeftModel

        from llmhpo.objectives.finetune import model as model_lib

        # merged on the CPU into full-precision weights (a quantised base would round the adapter away)
        attn = "sdpa" if cfg.model.attn_implementation == "flash_attention_2" else cfg.model.attn_implementation
        base, tok = model_lib.load(replace(cfg.model, quantization="none", attn_implementation=attn), "cpu")
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        merged.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
    return out
