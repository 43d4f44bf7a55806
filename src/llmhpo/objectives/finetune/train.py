"""LoRA training (report 3.2.1): AdamW with decoupled weight decay on the adapter weights
only, gradient accumulation, a transformers learning-rate schedule, bf16 autocast on GPUs
that support it. A NaN or infinite loss stops the trial as FAIL("diverged at step k").

Training can stop at any step and continue later exactly (multi-fidelity rungs): the
returned state holds the AdamW moments, the schedule's position, the data order and
position, and the random streams (dropout), so 4 -> 12 -> 36 steps gives the weights of
one 36-step run. The schedule always spans the full length (``max_steps``): a run stopped
early has seen the start of that schedule, not a compressed one."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from llmhpo.errors import TrialFailed
from llmhpo.objectives import progress
from llmhpo.objectives.finetune.config import TrainConfig
from llmhpo.objectives.finetune.data import Tokenized, collate


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)  # per optimiser step
    steps: int = 0
    tokens: int = 0  # non-padding tokens seen
    seconds: float = 0.0


def lora_config(settings: TrainConfig, target_modules):
    """peft's LoraConfig of one trial. target_modules: module names, or ("all-linear",) for
    every linear layer but the output head; use_dora / use_rslora from the trial's knobs."""
    from peft import LoraConfig

    targets = "all-linear" if tuple(target_modules) == ("all-linear",) else list(target_modules)
    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM",
                      use_dora=settings.use_dora, use_rslora=settings.use_rslora)


def total_steps(settings: TrainConfig, n_examples: int) -> int:
    """Optimiser steps of a full run: max_steps, or epochs over the data when max_steps is 0."""
    steps = settings.max_steps
    if steps <= 0:
        steps = max(1, math.ceil(settings.epochs * n_examples / (settings.batch_size * settings.grad_accum)))
    return steps


def train(model, data: Tokenized, settings: TrainConfig, pad_id: int, device: str, autocast_dtype=None,
          inject_nan_at: int | None = None, resume: dict | None = None,
          until: int | None = None) -> tuple[TrainStats, dict]:
    """Train ``model`` (a PeftModel) in place. settings: the trial's training knobs; its seed
    orders the data.

    resume: a state returned by an earlier call, to go on from its step; until: stop after
    this step (default: the full length). Returns the stats of the steps run now (the loss
    curve from step 1) and the state to continue from.
    """
    import torch
    from transformers import get_scheduler

    bs, accum = settings.batch_size, settings.grad_accum
    steps = total_steps(settings, len(data))
    until = steps if until is None else min(until, steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    sched = get_scheduler(settings.scheduler, opt, num_warmup_steps=int(settings.warmup_ratio * steps),
                          num_training_steps=steps)
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(data), generator=gen).tolist()
    cursor, first = 0, 1
    stats = TrainStats()
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        order, cursor, first = list(resume["order"]), int(resume["cursor"]), int(resume["step"]) + 1
        stats.losses = list(resume["losses"])
        torch.set_rng_state(resume["rng"])
        if "cuda_rng" in resume and torch.cuda.is_available():
            torch.cuda.set_rng_state(resume["cuda_rng"])
    model.train()
    t0 = time.time()
    progress("training", first - 1, until, "steps")
    for step in range(first, until + 1):
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(accum):
            if cursor + bs > len(order):
                order, cursor = torch.randperm(len(data), generator=gen).tolist(), 0
            idx = order[cursor: cursor + bs]
            cursor += bs
            ids, mask, labels = collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], pad_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if inject_nan_at is not None and step >= inject_nan_at:
                loss = loss * float("nan")
            if not torch.isfinite(loss):
                stats.seconds = time.time() - t0
                err = TrialFailed(f"diverged at step {step} (loss {loss.item()})")
                err.metrics = {"train_loss_curve": stats.losses, "diverged_step": step}
                raise err
            (loss / accum).backward()
            step_loss += loss.item() / accum
            stats.tokens += int(mask.sum())
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        opt.step()
        sched.step()
        stats.losses.append(step_loss)
        stats.steps = step
        progress("training", step, until, "steps")
    stats.seconds = time.time() - t0
    model.eval()
    state = {"step": max(until, first - 1), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "generator": gen.get_state(), "order": order, "cursor": cursor, "losses": stats.losses,
             "rng": torch.get_rng_state()}
    if torch.cuda.is_available() and device.startswith("cuda"):
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return stats, state


def validation_loss(model, data: Tokenized, pad_id: int, device: str, batch_size: int = 16, autocast_dtype=None) -> float:
    """Mean loss per response token on the held-out set."""
    import torch

    total, count = 0.0, 0
    model.eval()
    batches = math.ceil(len(data) / batch_size)
    progress("validation loss", 0, batches, "batches")
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            ids, mask, labels = collate(data.input_ids[i: i + batch_size], data.labels[i: i + batch_size], pad_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((shift_labels != -100).sum())
            progress("validation loss", i // batch_size + 1, batches, "batches")
    return total / max(count, 1)
