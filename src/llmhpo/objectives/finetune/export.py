"""``llmhpo best --export DIR``: the best trial's adapter and its config, optionally merged
into the base model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmhpo.errors import LlmhpoError


def export_best(study, record, out: Path, merge: bool = False) -> Path:
    cfg = study.config
    if cfg.objective != "finetune":
        out.mkdir(parents=True, exist_ok=True)
        (out / "best.json").write_text(json.dumps({"value": record.value, "params": record.params}, indent=1))
        return out
    src = (record.attrs.get("metrics") or {}).get("adapter_dir")
    if not src or not Path(src).is_dir():
        raise LlmhpoError(f"trial {record.number} has no saved adapter ({src or 'none recorded'}); "
                          "set [train] save_adapters = true and run it again")
    out = Path(out)
    adapter = out / "adapter"
    if adapter.exists():
        shutil.rmtree(adapter)
    shutil.copytree(src, adapter)
    (out / "best.json").write_text(json.dumps(
        {"study": cfg.study.name, "trial": record.number, "value": record.value, "objective": cfg.to_dict()["eval"]
         if "eval" in cfg.to_dict() else None, "params": record.params,
         "metrics": {k: v for k, v in (record.attrs.get("metrics") or {}).items() if k != "train_loss_curve"}},
        indent=1, default=str))
    (out / "study.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    if merge:
        from peft import PeftModel

        from llmhpo.objectives.finetune import FinetuneConfig
        from llmhpo.objectives.finetune import model as model_lib

        fc = FinetuneConfig.from_sections(cfg.finetune, cfg.objective_options, cfg.space, cfg.study.name)
        base, tok = model_lib.load(fc.model, "cpu")
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        merged.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
    return out
