"""Scoring cost with and without shared contexts ([eval] shared_context) on SmolLM2-135M
(fp32, CPU unless a GPU is there) and the HellaSwag-shaped builtin task llmhpo_story: total
scoring seconds (and CPU seconds, steadier on a shared machine) and requests per second
through ``evaluate`` (lm-eval included), the same
accuracies, and the largest log-likelihood difference over the task's requests.

usage: python benchmarks/shared_context.py [--limit 50] [--batch-size 8] [--out FILE.json]"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from llmhpo.objectives.finetune.config import EvalConfig, ModelConfig  # noqa: E402
from llmhpo.objectives.finetune.evaluate import check_tasks, evaluate, task_manager  # noqa: E402
from llmhpo.objectives.finetune.model import load  # noqa: E402
from llmhpo.objectives.finetune.scoring import scoring_lm  # noqa: E402
from llmhpo.objectives.finetune.tasks import STORY_TASK, stories  # noqa: E402


def loglikelihood_gap(model, tok, n: int, batch_size: int) -> float:
    """The largest |log-likelihood difference| between the two ways over n stories' requests."""
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, (r["prompt"], c), k, (STORY_TASK, d, 1))
            for d, r in enumerate(stories(n)) for k, c in enumerate(r["choices"])]
    answers = [scoring_lm()(pretrained=model, tokenizer=tok, batch_size=batch_size, shared_context=on)
               .loglikelihood(reqs) for on in (False, True)]
    return max(abs(a[0] - b[0]) for a, b in zip(*answers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=50, help="stories scored (4 requests each)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load(ModelConfig(dtype="float32"), device)
    cfg = EvalConfig(tasks=(STORY_TASK,), objective=f"{STORY_TASK}/acc", limit=args.limit,
                     batch_size=args.batch_size)
    tm = task_manager(cfg)
    check_tasks(tm, cfg)
    evaluate(model, tok, tm, replace(cfg, limit=2))  # warm-up: first calls pay one-off costs
    rows = {}
    for shared in (False, True):
        t0, c0 = time.perf_counter(), time.process_time()
        m = evaluate(model, tok, tm, replace(cfg, shared_context=shared))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = m[f"{STORY_TASK}/requests"]
        rows["shared" if shared else "plain"] = {
            "requests": n, "scoring_s": round(seconds, 2), "cpu_s": round(cpu, 2),
            "requests_per_s": round(n / seconds, 2),
            "model_s_per_request": round(m[f"{STORY_TASK}/seconds_per_request"], 4),
            "acc": m[f"{STORY_TASK}/acc"], "acc_norm": m[f"{STORY_TASK}/acc_norm"]}
    result = {"model": "builtin:smollm2-135m-instruct (fp32)", "task": STORY_TASK, "device": device,
              "threads": torch.get_num_threads(), "limit": args.limit, "batch_size": args.batch_size,
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"), **rows,
              "speedup": round(rows["plain"]["scoring_s"] / rows["shared"]["scoring_s"], 2),
              "max_abs_loglikelihood_diff": loglikelihood_gap(model, tok, min(args.limit, 8), args.batch_size)}
    print("| scoring | requests | seconds | CPU seconds | requests/s | acc | acc_norm |\n|---|---|---|---|---|---|---|")
    for name in ("plain", "shared"):
        r = rows[name]
        print(f"| {name} | {r['requests']} | {r['scoring_s']} | {r['cpu_s']} | {r['requests_per_s']} | "
              f"{r['acc']:.3f} | {r['acc_norm']:.3f} |")
    print(f"speedup {result['speedup']}x; largest log-likelihood difference {result['max_abs_loglikelihood_diff']:.2e}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
