"""Full-fidelity random search against ASHA on the real fine-tuning objective, offline:
SmolLM2-135M-Instruct, LoRA on the builtin addition task, scored by lm-eval, the report's
search space, the same training-step budget for both (3 full trials of 27 steps = 81 steps;
ASHA rungs 3, 9, 27 with 20 questions per task below the top rung, 40 at the top).
usage: python benchmarks/smollm2_multifidelity.py [OUT_DIR]"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from importlib import resources  # noqa: E402

from llmhpo.config import Config  # noqa: E402
from llmhpo.runner import run  # noqa: E402
from llmhpo.study import Study  # noqa: E402


def config(out: Path, multi_fidelity: bool) -> Config:
    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    name = "smol-asha" if multi_fidelity else "smol-full"
    raw["study"].update(name=name, storage=f"{name}.db")
    raw["optimizer"] = {"name": "random"}
    raw["train"].update(max_steps=27, output_dir=".")
    raw.pop("warm_start", None)
    if multi_fidelity:
        raw["budget"] = {"resource": 81}
        raw["fidelity"] = {"resource": "max_steps", "min": 3, "max": 27, "eta": 3, "scheduler": "asha"}
        raw["eval"]["low_rung_limit"] = 20
    else:
        raw["budget"] = {"trials": 3}
    return Config.from_dict(raw, default_name=name, base_dir=out)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for mf in (False, True):
        cfg = config(out, mf)
        t0 = time.time()
        summary = run(cfg, progress=False)
        seconds = time.time() - t0
        st = Study.load(cfg.study.storage, cfg.study.name)
        recs = st.records()
        top = sorted((r for r in recs if r.state == "COMPLETE"), key=lambda r: r.attrs["worker"]["end"])
        result["asha" if mf else "full"] = {
            "best": summary.best_value, "best_params": summary.best_params, "seconds": round(seconds, 1),
            "configurations": len(recs), "complete": len(top),
            "steps_spent": sum(float(r.attrs.get("resource_spent", 27.0)) for r in recs),
            "top_rung_values": [r.value for r in top],
        }
        print(json.dumps(result, indent=1, default=str), flush=True)
    Path("docs/measurements/smollm2_multifidelity.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/llmhpo-smol-mf"))
