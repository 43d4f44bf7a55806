"""LoRA training (report 3.2.1): AdamW with decoupled weight decay on the adapter weights
only, gradient accumulation, a transformers learning-rate schedule, bf16 autocast on GPUs
that support it. A NaN or infinite loss stops the trial as FAIL("diverged at step k").

An optimiser step's loss is the sum of the response-token losses over its whole effective
batch (batch_size x grad_accum examples, over every data-parallel rank) divided by the
number of those tokens (as transformers' ``num_items_in_batch``), so a step does not depend
on how it is cut into forward passes; the output head runs on the response positions only
(``response_loss``). The micro-batch (examples per forward pass) starts at
batch_size and halves on a CUDA out-of-memory error, redoing the same step on the same
examples. Options: padding-free packing (``[train] packing``), gradient checkpointing, and
data parallelism when torch.distributed is initialised (each rank takes its share of every
micro-batch; the LoRA gradients are summed over the ranks before clipping).

Training can stop at any step and continue later exactly (multi-fidelity rungs): the
returned state holds the AdamW moments, the schedule's position, the data order and
position, and the random streams (dropout), so 4 -> 12 -> 36 steps gives the weights of
one 36-step run. The schedule always spans the full length (``max_steps``): a run stopped
early has seen the start of that schedule, not a compressed one."""

from __future__ import annotations

import gc
import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmhpo.errors import TrialFailed
from llmhpo.objectives import progress
from llmhpo.objectives.finetune.config import TrainConfig
from llmhpo.objectives.finetune.data import Tokenized, collate, n_targets, pack


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)  # per optimiser step
    steps: int = 0
    tokens: int = 0  # non-padding tokens seen (all ranks)
    seconds: float = 0.0
    micro_batch: int = 0  # examples per forward pass at the end (all ranks together)
    oom_backoffs: int = 0  # halvings of the micro-batch after out-of-memory errors


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
          inject_nan_at: int | None = None, resume: dict | None = None, until: int | None = None,
          inject_oom_above: int | None = None) -> tuple[TrainStats, dict]:
    """Train ``model`` (a PeftModel) in place. settings: the trial's training knobs; its seed
    orders the data.

    resume: a state returned by an earlier call, to go on from its step; until: stop after
    this step (default: the full length). Returns the stats of the steps run now (the loss
    curve from step 1) and the state to continue from. inject_nan_at / inject_oom_above
    (tests): the loss turns NaN from that step on / micro-batches larger than this raise
    torch.OutOfMemoryError.

    Data parallel (torch.distributed initialised, world size W > 1): every rank calls this
    with the same model, data and settings, so all draw the same examples; each takes its
    share of every micro-batch (``idx[rank::W]``). The step's token count is then known to
    every rank without communication; the loss, an out-of-memory flag and the LoRA gradients
    (one flattened buffer, before clipping) are summed over the ranks, so every rank ends
    with the same weights, loss curve and stats.
    """
    import torch

    bs, accum = settings.batch_size, settings.grad_accum
    steps = total_steps(settings, len(data))
    until = steps if until is None else min(until, steps)
    loop = _Loop(model, data, settings, pad_id, device, autocast_dtype, steps, inject_nan_at, inject_oom_above)
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(data), generator=gen).tolist()
    cursor, first = 0, 1
    stats = TrainStats()
    if resume is not None:
        order, cursor, first = loop.restore(resume, gen, stats)
    model.train()
    t0 = time.time()
    progress("training", first - 1, until, "steps")
    try:
        with checkpointing(model, settings.gradient_checkpointing):
            for step in range(first, until + 1):
                idx, order, cursor = _draw(order, cursor, gen, len(data), bs, accum)
                stats.losses.append(loop.step(step, idx, stats))
                stats.steps = step
                progress("training", step, until, "steps")
    finally:
        stats.seconds = time.time() - t0
        stats.micro_batch = loop.micro
        model.eval()
    return stats, loop.state(max(until, first - 1), gen, order, cursor, stats)


def _draw(order: list[int], cursor: int, gen, n: int, bs: int, accum: int):
    """The examples of one optimiser step: grad_accum draws of batch_size from the shuffled
    order, reshuffled when an epoch runs out. Returns (indices, order, cursor)."""
    import torch

    idx = []
    for _ in range(accum):
        if cursor + bs > len(order):
            order, cursor = torch.randperm(n, generator=gen).tolist(), 0
        idx += order[cursor: cursor + bs]
        cursor += bs
    return idx, order, cursor


class _Loop:
    """What the optimiser steps of one train() call share: model, optimiser, schedule, the
    current micro-batch and this process's rank among ``world`` data-parallel ranks."""

    def __init__(self, model, data: Tokenized, settings: TrainConfig, pad_id: int, device: str, autocast_dtype,
                 steps: int, inject_nan_at: int | None, inject_oom_above: int | None):
        import torch
        from transformers import get_scheduler

        self.model, self.data, self.settings, self.pad_id, self.device = model, data, settings, pad_id, device
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.sched = get_scheduler(settings.scheduler, self.opt, num_warmup_steps=int(settings.warmup_ratio * steps),
                                   num_training_steps=steps)
        self.autocast = {"device_type": device.split(":")[0], "dtype": autocast_dtype,
                         "enabled": autocast_dtype is not None}
        self.rank, self.world = _rank_and_world()
        self.micro = settings.batch_size
        self.inject_nan_at, self.inject_oom_above = inject_nan_at, inject_oom_above

    def restore(self, resume: dict, gen, stats: TrainStats) -> tuple[list[int], int, int]:
        """Go on from ``resume``: returns (order, cursor, first step)."""
        import torch

        self.opt.load_state_dict(resume["optimizer"])
        self.sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        stats.losses = list(resume["losses"])
        self.micro = min(int(resume.get("micro_batch", self.micro)), self.settings.batch_size)
        torch.set_rng_state(resume["rng"])
        if "cuda_rng" in resume and torch.cuda.is_available():
            torch.cuda.set_rng_state(resume["cuda_rng"])
        return list(resume["order"]), int(resume["cursor"]), int(resume["step"]) + 1

    def state(self, step: int, gen, order: list[int], cursor: int, stats: TrainStats) -> dict:
        """Everything a later call needs to go on exactly from ``step``."""
        import torch

        state = {"step": step, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "generator": gen.get_state(), "order": order, "cursor": cursor, "losses": stats.losses,
                 "rng": torch.get_rng_state(), "micro_batch": self.micro}
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def step(self, step: int, idx: list[int], stats: TrainStats) -> float:
        """One optimiser step on the examples ``idx``; returns its loss (mean per response token)."""
        import torch

        n_items = max(sum(n_targets(self.data.labels[i]) for i in idx), 1)
        rng = _rng_state(self.device)
        while True:
            loss, oom = self._passes(step, idx, n_items)
            loss, oom = self._reduce_loss(loss, oom)
            if oom is None:
                break
            self._back_off(oom, stats)
            _set_rng_state(self.device, rng)  # the redone step draws the same dropout stream
        if not math.isfinite(loss):
            err = TrialFailed(f"diverged at step {step} (loss {loss})")
            err.metrics = {"train_loss_curve": stats.losses, "diverged_step": step}
            raise err
        self._reduce_grads()
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        stats.tokens += sum(len(self.data.input_ids[i]) for i in idx)
        return loss

    def _passes(self, step: int, idx: list[int], n_items: int) -> tuple[float, str | None]:
        """Forward and backward over ``idx`` in micro-batches (this rank's share of each),
        each loss divided by the step's ``n_items``. Returns (this rank's loss, None), or
        what an out-of-memory error said."""
        import torch

        total = 0.0
        try:
            for start in range(0, len(idx), self.micro):
                share = idx[start: start + self.micro][self.rank:: self.world]  # this rank's part
                if not share:
                    continue
                inputs = batch_inputs(self.data, share, self.pad_id, self.settings.packing, self.device)
                with torch.autocast(**self.autocast):
                    loss = response_loss(self.model, inputs) / n_items
                if self.inject_nan_at is not None and step >= self.inject_nan_at:
                    loss = loss * float("nan")
                loss.backward()
                if self.inject_oom_above is not None and self.micro > self.inject_oom_above:
                    raise torch.OutOfMemoryError("CUDA out of memory (injected). Tried to allocate 3.10 GiB")
                total += loss.item()
        except Exception as e:
            if not _is_oom(e):
                raise
            return total, memory_note(e, self.device)
        return total, None

    def _back_off(self, oom: str, stats: TrainStats) -> None:
        """Drop the step's gradients, free the memory, halve the micro-batch (or fail at one
        example per rank)."""
        import torch

        self.opt.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        if self.micro <= self.world:
            raise TrialFailed(f"out of memory at micro-batch {self.micro} (max_seq_len {self.settings.max_seq_len}): "
                              f"{oom}; set [train] gradient_checkpointing = true, [model] quantization = \"4bit\", "
                              "or lower max_seq_len")
        self.micro = max(self.micro // 2, self.world)
        stats.oom_backoffs += 1

    def _reduce_loss(self, loss: float, oom: str | None) -> tuple[float, str | None]:
        """The step's loss summed over the ranks, and whether any rank ran out of memory."""
        if self.world == 1:
            return loss, oom
        import torch
        import torch.distributed as dist

        t = torch.tensor([loss, 0.0 if oom is None else 1.0], dtype=torch.float64, device=self.trainable[0].device)
        dist.all_reduce(t)
        if t[1].item() > 0:
            return loss, oom or "out of memory on another rank"
        return t[0].item(), None

    def _reduce_grads(self) -> None:
        """Sum the LoRA gradients over the ranks (one flattened buffer)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in self.trainable])
        dist.all_reduce(flat)
        offset = 0
        for p in self.trainable:
            g = flat[offset: offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)


#: architectures whose logits are exactly lm_head(last hidden state): no soft-capping or
#: scaling after the head, so the head may be applied to the response positions alone
PLAIN_HEAD = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gemma",
                        "olmo", "olmo2", "smollm3", "starcoder2"})


def response_loss(model, inputs: dict):
    """The summed cross-entropy of the response tokens of ``inputs`` (labels not -100).

    The output head runs on the positions the loss looks at only: a batch's logits (tokens x
    vocabulary, in fp32 for the loss, with their log-softmax kept for the backward pass) are
    the largest tensors of a LoRA step, and most positions are prompt. For architectures not in
    PLAIN_HEAD, the model's own forward computes every position's logits.
    """
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    if getattr(causal.config, "model_type", None) not in PLAIN_HEAD:
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
        targets = labels[:, 1:]
        return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 targets.reshape(-1), ignore_index=-100, reduction="sum")
    hidden = causal.get_decoder()(**{k: v for k, v in inputs.items() if k != "labels"},
                                  use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = causal.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")


def batch_inputs(data: Tokenized, idx: list[int], pad_id: int, packing: bool, device: str) -> dict:
    """The model's keyword arguments for the examples ``idx``, labels included: one packed row
    (position_ids, no attention mask) or a right-padded batch (attention_mask)."""
    ids, labels = [data.input_ids[i] for i in idx], [data.labels[i] for i in idx]
    if packing:
        x, pos, y = pack(ids, labels)
        return {"input_ids": x.to(device), "position_ids": pos.to(device), "labels": y.to(device)}
    x, mask, y = collate(ids, labels, pad_id)
    return {"input_ids": x.to(device), "attention_mask": mask.to(device), "labels": y.to(device)}


@contextmanager
def checkpointing(model, on: bool):
    """Gradient checkpointing (non-reentrant, input grads on as peft needs) on ``model`` (a
    PeftModel) while inside; switched off after, since later trials share the base model."""
    if not on:
        yield
        return
    base = model.get_base_model()
    base.activation_checkpointing_enable({"use_reentrant": False})
    if not getattr(base, "_require_grads_hooks", None):
        base.enable_input_require_grads()
    try:
        yield
    finally:
        base.activation_checkpointing_disable()
        base.disable_input_require_grads()


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def memory_note(err: BaseException, device: str) -> str:
    """What an out-of-memory error says about memory: 'needed 3.1 GiB more, 78.2 of 79.6 GiB
    in use on cuda:0' (the device part where CUDA is present)."""
    import torch

    parts = []
    m = re.search(r"Tried to allocate ([\d.]+) ?(TiB|GiB|MiB|KiB|B)", str(err))
    if m:
        parts.append(f"needed {float(m[1]) * _UNITS[m[2]] / 2**30:.1f} GiB more")
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        parts.append(f"{(total - free) / 2**30:.1f} of {total / 2**30:.1f} GiB in use on cuda:{index}")
    return ", ".join(parts) or type(err).__name__



def _rng_state(device: str):
    import torch

    cuda = torch.cuda.get_rng_state() if device.startswith("cuda") and torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: str, state) -> None:
    import torch

    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])

def validation_loss(model, data: Tokenized, pad_id: int, device: str, batch_size: int = 16, autocast_dtype=None,
                    packing: bool = False) -> float:
    """Mean loss per response token on the held-out set (packing: each batch as one packed row)."""
    import torch

    total, count = 0.0, 0
    model.eval()
    batches = math.ceil(len(data) / batch_size)
    progress("validation loss", 0, batches, "batches")
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            inputs = batch_inputs(data, list(range(i, min(i + batch_size, len(data)))), pad_id, packing, device)
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                total += response_loss(model, inputs).item()
            count += int((inputs["labels"][:, 1:] != -100).sum())
            progress("validation loss", i // batch_size + 1, batches, "batches")
    return total / max(count, 1)
