"""One llmhpo trial's training (``llmhpo.objectives.finetune.train.train``) against TRL's
SFTTrainer with peft, on the same model (builtin:smollm2-135m-instruct, fp32, CPU), the same
tokens (llmhpo's tokenisation of builtin:add, given to TRL as input_ids with a completion
mask, so that both compute the loss on the responses only), the same LoRA adapter (q, k, v,
o; r 8, alpha 16, dropout 0.05), batch, sequence length, steps, learning rate, constant
schedule, weight decay and gradient clipping.

Each case runs in a fresh subprocess: training tokens/s (non-padding tokens the model saw /
training seconds, model load excluded) and peak RSS during training (VmHWM, reset once the
model is loaded, where Linux allows; the RSS before training is given apart). Cases: padded batches; TRL's
padding_free and packing against llmhpo's ``[train] packing``; and batches of 512-token rows
(records concatenated) with gradient checkpointing off and on, for its memory. An llmhpo
case whose [train] key this llmhpo does not have is reported as skipped.

usage: python benchmarks/trl_baseline.py [--steps 16] [--long-steps 2] [--long-batch 4]
       [--out docs/measurements/trl_baseline.json]     (needs: pip install 'llmhpo[baseline]')
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LR, BATCH, SEQ, LONG_SEQ = 2e-4, 8, 64, 512
# name -> (trainer, options, long rows); llmhpo options are [train] keys, TRL's SFTConfig fields
CASES = {
    "llmhpo": ("llmhpo", {}, False),
    "trl": ("trl", {}, False),
    "llmhpo packing": ("llmhpo", {"packing": True}, False),
    "trl padding_free": ("trl", {"padding_free": True}, False),
    "trl packing": ("trl", {"packing": True}, False),
    "llmhpo 512": ("llmhpo", {}, True),
    "llmhpo 512 checkpointing": ("llmhpo", {"gradient_checkpointing": True}, True),
    "trl 512": ("trl", {}, True),
    "trl 512 checkpointing": ("trl", {"gradient_checkpointing": True}, True),
}


RSS: dict = {}  # the RSS just before training, and where the peak is counted from


def rss_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux >= 4.0), so that the peak is training's,
    not the model load's transient; False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tokens(tok, long: bool, n: int):
    """llmhpo's tokenisation of builtin:add: (input_ids, labels) lists. long: records
    concatenated into rows of exactly LONG_SEQ tokens (each record's response in the loss)."""
    from llmhpo.objectives.finetune.config import DataConfig
    from llmhpo.objectives.finetune.data import Tokenized, load_records, split, tokenize

    train, _ = split(load_records(DataConfig()), DataConfig())
    data = tokenize(train, tok, "alpaca", 10_000 if long else SEQ)
    if not long:
        return data
    ids, labels, row_ids, row_labels = [], [], [], []
    for x, y in zip(data.input_ids, data.labels):
        row_ids, row_labels = row_ids + x, row_labels + y
        if len(row_ids) >= LONG_SEQ:
            ids.append(row_ids[:LONG_SEQ])
            labels.append(row_labels[:LONG_SEQ])
            row_ids, row_labels = [], []
            if len(ids) == n:
                break
    return Tokenized(ids, labels)


def count_tokens(model, seen: list[int]):
    """A hook adding each forward pass's non-padding tokens to ``seen``."""
    def hook(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(int(mask.sum()) if mask is not None else ids.numel())

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def run_llmhpo(model, tok, data, options: dict, batch: int, steps: int, seq: int) -> tuple[float, int]:
    from dataclasses import fields

    from peft import get_peft_model

    from llmhpo.objectives.finetune.config import TrainConfig
    from llmhpo.objectives.finetune.train import lora_config, train

    missing = [k for k in options if k not in {f.name for f in fields(TrainConfig)}]
    if missing:
        raise KeyError(f"this llmhpo has no [train] {missing[0]}")
    settings = TrainConfig(learning_rate=LR, batch_size=batch, max_steps=steps, max_seq_len=seq,
                           scheduler="constant", **options)
    peft_model = get_peft_model(model, lora_config(settings, ("q_proj", "k_proj", "v_proj", "o_proj")))
    RSS["before"], RSS["since"] = rss_mb("VmRSS"), "training" if reset_peak() else "process start"
    stats, _ = train(peft_model, data, settings, tok.pad_token_id, "cpu")
    return stats.seconds, stats.tokens  # the examples' tokens, padding left out


def run_trl(model, tok, data, options: dict, batch: int, steps: int, seq: int) -> tuple[float, int]:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from llmhpo.objectives.finetune.config import TrainConfig
    from llmhpo.objectives.finetune.train import lora_config

    ds = datasets.Dataset.from_dict({"input_ids": data.input_ids,
                                     "completion_mask": [[int(v != -100) for v in y] for y in data.labels]})
    # padding_free without packing enforces no max_length: the rows are cut to it already
    max_length = None if options.get("padding_free") and not options.get("packing") else seq
    args = SFTConfig(output_dir="/tmp/llmhpo-trl-baseline", per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01,
                     max_grad_norm=1.0, max_length=max_length, completion_only_loss=True, use_cpu=True,
                     bf16=False, fp16=False, report_to="none", save_strategy="no", logging_strategy="no",
                     disable_tqdm=True, seed=0, dataloader_num_workers=0,
                     **{"gradient_checkpointing": False, **options})  # TRL turns it on by default
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=lora_config(TrainConfig(), ("q_proj", "k_proj", "v_proj", "o_proj")))
    seen: list[int] = []
    handle = count_tokens(trainer.model, seen)
    RSS["before"], RSS["since"] = rss_mb("VmRSS"), "training" if reset_peak() else "process start"
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    handle.remove()
    return seconds, sum(seen)


def case(name: str, steps: int, long_steps: int, long_batch: int) -> dict:
    """One case in this process: {tokens_per_s, peak_rss_mb, ...} or {skipped: why}."""
    import torch

    from llmhpo.objectives.finetune.config import ModelConfig
    from llmhpo.objectives.finetune.model import load

    trainer, options, long = CASES[name]
    batch, n_steps, seq = (long_batch, long_steps, LONG_SEQ) if long else (BATCH, steps, SEQ)
    model, tok = load(ModelConfig(dtype="float32"), "cpu")
    data = tokens(tok, long, batch * n_steps)
    try:
        run = run_llmhpo if trainer == "llmhpo" else run_trl
        seconds, n_tokens = run(model, tok, data, options, batch, n_steps, seq)
    except KeyError as e:
        return {"case": name, "skipped": str(e).strip("'\"")}
    return {"case": name, "batch": batch, "steps": n_steps, "max_seq_len": seq, "tokens": n_tokens,
            "train_s": round(seconds, 2), "tokens_per_s": round(n_tokens / seconds, 1),
            "rss_before_train_mb": round(RSS["before"]), "peak_rss_mb": round(rss_mb("VmHWM")),
            "peak_since": RSS["since"],
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16, help="optimiser steps of the 64-token cases")
    ap.add_argument("--long-steps", type=int, default=2, help="optimiser steps of the 512-token cases")
    ap.add_argument("--long-batch", type=int, default=4, help="rows of 512 tokens per batch")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this (fresh) process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.steps, args.long_steps, args.long_batch)))
        return
    rows = []
    for name in args.cases.split(","):
        cmd = [sys.executable, __file__, "--case", name, "--steps", str(args.steps),
               "--long-steps", str(args.long_steps), "--long-batch", str(args.long_batch)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        rows.append(json.loads(lines[-1]) if done.returncode == 0 and lines
                    else {"case": name, "failed": (done.stderr.strip().splitlines() or ["no output"])[-1]})
        print(f"{name}: {rows[-1]}", file=sys.stderr)
    import trl

    print("| case | batch x seq | steps | tokens/s | peak RSS MB | RSS before training MB |\n|---|---|---|---|---|---|")
    for r in rows:
        if "tokens_per_s" in r:
            print(f"| {r['case']} | {r['batch']} x {r['max_seq_len']} | {r['steps']} | {r['tokens_per_s']} | "
                  f"{r['peak_rss_mb']} | {r['rss_before_train_mb']} |")
        else:
            print(f"| {r['case']} | {r.get('skipped') or r.get('failed')} | | | | |")
    if args.out:
        meta = {"model": "builtin:smollm2-135m-instruct (fp32)", "data": "builtin:add", "device": "cpu",
                "trl": trl.__version__, "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "learning_rate": LR}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
