"""The fine-tuning objective (report 3.2): LoRA fine-tuning of a causal LM on instruction
data, scored by lm-eval-harness. One call = one trial: params -> Result.

The base model, the tokenised data and the lm-eval task index are loaded once per worker
and reused; each trial wraps the base model in a fresh LoRA adapter (peft), trains, scores,
saves the adapter, and unloads it, leaving the base weights exactly as they were.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmhpo.errors import ObjectiveSetupError, TrialFailed
from llmhpo.objectives import Fidelity, Result, progress
from llmhpo.objectives.finetune.config import FinetuneConfig, TrainConfig


@dataclass(frozen=True)
class TrialPlan:
    """One trial, decided before it trains, with every knob typed once."""

    settings: TrainConfig  # [train] with the searched params in place (and the fidelity's run length)
    fidelity: Fidelity | None = None  # multi-fidelity: the rung this call brings the configuration to
    until: int | None = None  # multi-fidelity: stop after this optimiser step (None: the full run)
    checkpoint: Path | None = None  # multi-fidelity: the state this rung continues from and leaves

    @property
    def low_rung(self) -> bool:
        """Below the top rung: scored with [eval] low_rung_limit where one is set."""
        return self.fidelity is not None and self.fidelity.value < self.fidelity.max


class FinetuneObjective:
    """One worker's fine-tuning objective. config: with absolute paths (``FinetuneConfig.resolved``)."""

    def __init__(self, config: FinetuneConfig, device: str | None = None):
        self.cfg = config
        self.device = device
        self.model = None
        self.tokenizer = None
        self._tm = None
        self._data: dict[int, Any] = {}  # max_seq_len -> (train, val) tokenised
        self._records = None
        self.load_seconds = 0.0
        self.task_index_seconds = 0.0
        self.follower = False  # a follower rank trains only: no lm-eval task index

    # ------------------------------------------------------------------ set-up (once per worker)
    def setup(self) -> None:
        import warnings

        import torch

        # deprecation notices of the libraries, once per trial, would bury the study's output
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|lm_eval)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(transformers|peft|lm_eval)")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars in every worker's output

        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # [train] threads, else the executor's share of the cores (LLMHPO_THREADS), else torch's default
        threads = self.cfg.train.threads or int(os.environ.get("LLMHPO_THREADS") or 0)
        if threads:
            torch.set_num_threads(threads)
        if self.model is None:
            self._load_model()
        if self._tm is None and not self.follower:
            from llmhpo.objectives.finetune.evaluate import check_tasks, task_manager

            t0 = time.time()
            self._tm = task_manager(self.cfg.eval)
            check_tasks(self._tm, self.cfg.eval)
            self.task_index_seconds = time.time() - t0
        if self._records is None:
            from llmhpo.objectives.finetune.data import load_records, split

            self._records = split(load_records(self.cfg.data), self.cfg.data)

    def _load_model(self) -> None:
        from llmhpo.objectives.finetune import model as model_lib

        t0 = time.time()
        self.model, self.tokenizer = model_lib.load(self.cfg.model, self.device,
                                                    getattr(self.cfg.train, "gradient_checkpointing", False))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.load_seconds = time.time() - t0

    def _autocast_dtype(self):
        import torch

        from llmhpo.objectives.finetune.model import pick_dtype

        if not self.device.startswith("cuda"):
            return None
        dt = pick_dtype(self.cfg.model, self.device)
        return dt if dt in (torch.bfloat16, torch.float16) else None

    def _tokenized(self, max_len: int):
        from llmhpo.objectives.finetune.data import tokenize

        if max_len not in self._data:
            train, val = self._records
            t = self.cfg.data.template
            self._data[max_len] = (tokenize(train, self.tokenizer, t, max_len),
                                   tokenize(val, self.tokenizer, t, max_len) if val else None)
        return self._data[max_len]

    # ------------------------------------------------------------------ one trial
    def __call__(self, params: dict[str, Any], inject_nan_at: int | None = None, fidelity=None,
                 inject_oom_above: int | None = None) -> Result:
        """One trial; with ``fidelity`` (multi-fidelity), train up to fidelity.value steps (or
        epochs) of a run whose schedule spans fidelity.max, going on from the checkpoint in
        fidelity.checkpoint and leaving the new one there. inject_nan_at / inject_oom_above:
        test hooks of ``train.train``."""
        import torch
        from peft import get_peft_model
        from peft.utils import set_peft_model_state_dict

        from llmhpo.objectives.finetune.peaks import TrialMemory
        from llmhpo.objectives.finetune.train import lora_config

        timings: dict[str, float] = {}
        t0 = time.time()
        plan, train_data, val_data = self._prepare(params, fidelity, timings)
        resume = (torch.load(plan.checkpoint, map_location="cpu", weights_only=False)
                  if plan.checkpoint is not None and plan.checkpoint.is_file() else None)
        on_cuda = self.device.startswith("cuda")
        memory = TrialMemory(on_cuda).start()  # this trial's peaks, not the worker's
        peft_model = None
        try:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if on_cuda else []):
                torch.manual_seed(plan.settings.seed)  # LoRA init and dropout: the same for every trial
                peft_model = get_peft_model(self.model, lora_config(plan.settings, self.cfg.model.target_modules))
                if resume is not None:
                    set_peft_model_state_dict(peft_model, resume["adapter"])
                metrics = self._train(peft_model, plan, train_data, resume, (inject_nan_at, inject_oom_above),
                                      timings)
            value = self._score(peft_model, plan, val_data, metrics, timings)
            if self.cfg.train.save_adapters:
                progress("saving adapter")
                metrics["adapter_dir"] = self._save_adapter(peft_model, params, asdict(plan.settings))
        except TrialFailed as e:
            memory.stop()
            e.metrics = {**(getattr(e, "metrics", None) or {}), **memory.metrics()}
            raise
        except ObjectiveSetupError:
            raise
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            # training halves its micro-batch on its own; this is memory run out elsewhere
            # (scoring, host memory), which no retry of the same trial would change
            if not isinstance(e, MemoryError) and "out of memory" not in str(e).lower():
                raise
            from llmhpo.objectives.finetune.train import memory_note

            raise _out_of_memory(f"out of memory outside the training passes ({memory_note(e, self.device)})",
                                 memory) from None
        finally:
            if peft_model is not None:
                self.model = peft_model.unload()  # removes the LoRA layers: the base model is untouched
                del peft_model
            gc.collect()
            if on_cuda:
                torch.cuda.empty_cache()
            memory.stop()
        metrics.update(memory.metrics())
        metrics["device"] = self.device
        metrics["threads"] = torch.get_num_threads()
        metrics["ranks"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        timings["total"] = time.time() - t0
        return Result(value, metrics, timings)

    def follow(self, params: dict[str, Any], fidelity=None) -> None:
        """A follower rank's part of a trial trained by a rank group (``llmhpo.executors.ranks``):
        the same adapter, from the same rung checkpoint, trained on this rank's share of each
        batch; rank 0 alone scores and saves."""
        import torch
        from peft import get_peft_model
        from peft.utils import set_peft_model_state_dict

        from llmhpo.objectives.finetune import train as train_lib

        self.follower = True
        plan, train_data, _ = self._prepare(params, fidelity, {})
        resume = (torch.load(plan.checkpoint, map_location="cpu", weights_only=False)
                  if plan.checkpoint is not None and plan.checkpoint.is_file() else None)
        peft_model = None
        try:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.device.startswith("cuda") else []):
                torch.manual_seed(plan.settings.seed)  # the LoRA init of rank 0
                peft_model = get_peft_model(self.model, train_lib.lora_config(plan.settings,
                                                                              self.cfg.model.target_modules))
                if resume is not None:
                    set_peft_model_state_dict(peft_model, resume["adapter"])
                train_lib.train(peft_model, train_data, plan.settings, self.tokenizer.pad_token_id, self.device,
                                self._autocast_dtype(), None, None if resume is None else resume["train"], plan.until)
        finally:
            if peft_model is not None:
                self.model = peft_model.unload()
                del peft_model
            gc.collect()

    def _prepare(self, params: dict[str, Any], fidelity, timings: dict[str, float]):
        """The worker set up (model, tasks, data), and the trial's plan and tokenised data:
        (TrialPlan, train, val)."""
        from llmhpo.objectives.finetune.train import total_steps

        if self.cfg.model.reload_each_trial and self.model is not None:
            self.model = None
            gc.collect()
        t0 = time.time()
        first = self.model is None
        if first or self._tm is None or self._records is None:
            progress("loading")
        self.setup()
        timings["model_load"] = self.load_seconds if first else 0.0
        timings["setup"] = time.time() - t0
        settings = self.cfg.train.with_params(params)
        train_data, val_data = self._tokenized(settings.max_seq_len)
        if fidelity is None:
            return TrialPlan(settings), train_data, val_data
        if fidelity.resource == "epochs":  # the schedule spans the top rung's epochs
            settings = replace(settings, max_steps=0, epochs=float(fidelity.max))
            until = total_steps(replace(settings, epochs=float(fidelity.value)), len(train_data))
        else:
            settings = replace(settings, max_steps=int(fidelity.max))
            until = int(fidelity.value)
        return TrialPlan(settings, fidelity, until, Path(fidelity.checkpoint) / "state.pt"), train_data, val_data

    def _train(self, peft_model, plan: "TrialPlan", train_data, resume: dict | None,
               inject: tuple[int | None, int | None], timings: dict[str, float]) -> dict[str, Any]:
        """Train the adapter (from ``resume``, a rung's checkpoint, if any), leave the new
        checkpoint, and return the training metrics."""
        import torch
        from peft.utils import get_peft_model_state_dict

        from llmhpo.objectives.finetune import train as train_lib

        start_step = 0 if resume is None else int(resume["train"]["step"])
        stats, state = train_lib.train(peft_model, train_data, plan.settings, self.tokenizer.pad_token_id, self.device,
                                       self._autocast_dtype(), inject[0],
                                       None if resume is None else resume["train"], plan.until, inject[1])
        if plan.checkpoint is not None:
            progress("saving checkpoint")
            plan.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = plan.checkpoint.with_name(f"state.pt.tmp-{os.getpid()}")
            torch.save({"adapter": get_peft_model_state_dict(peft_model), "train": state}, tmp)
            os.replace(tmp, plan.checkpoint)  # atomic: a kill leaves the previous rung's checkpoint
        timings["train"] = stats.seconds
        fd = plan.fidelity
        trained = {} if fd is None else {"resource_trained": state["step"] - start_step if fd.resource == "max_steps"
                                         else fd.value * (1 - start_step / max(plan.until, 1))}
        return {"train_loss_curve": stats.losses, "train_steps": stats.steps,
                "steps_trained_now": state["step"] - start_step, **trained,
                "train_tokens": stats.tokens, "train_tokens_per_s": stats.tokens / max(stats.seconds, 1e-9),
                "final_train_loss": stats.losses[-1] if stats.losses else None,
                "micro_batch": stats.micro_batch, "oom_backoffs": stats.oom_backoffs}

    def _score(self, peft_model, plan: "TrialPlan", val_data, metrics: dict[str, Any],
               timings: dict[str, float]) -> float:
        """Add the validation loss and lm-eval's metrics to ``metrics``; the objective's value."""
        from llmhpo.objectives.finetune.evaluate import evaluate, objective_value
        from llmhpo.objectives.finetune.train import validation_loss

        t1 = time.time()
        if self.cfg.eval.val_loss and val_data is not None:
            metrics["val_loss"] = validation_loss(peft_model, val_data, self.tokenizer.pad_token_id, self.device,
                                                  autocast_dtype=self._autocast_dtype(),
                                                  packing=plan.settings.packing)
        timings["val_loss"] = time.time() - t1
        t1 = time.time()
        eval_cfg = self.cfg.eval
        if plan.low_rung and eval_cfg.low_rung_limit is not None:
            eval_cfg = replace(eval_cfg, limit=eval_cfg.low_rung_limit)  # cheaper scoring below the top
        metrics.update(evaluate(peft_model, self.tokenizer, self._tm, eval_cfg))
        timings["eval"] = time.time() - t1
        return objective_value(metrics, self.cfg.eval.objective)

    def _save_adapter(self, peft_model, params: dict[str, Any], knobs: dict[str, Any]) -> str:
        """Save the adapter with the params that chose it and every training knob it ran with."""
        from llmhpo.objectives.finetune.model import portable_name

        key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
        folder = Path(self.cfg.train.output_dir) / self.cfg.study_name / "adapters" / key
        # the adapter names the model the user gave (a hub id loads anywhere), not the
        # local folder it was loaded from
        for pc in peft_model.peft_config.values():
            pc.base_model_name_or_path = portable_name(self.cfg.model)
        # peft's "auto" fetches the base model's config (from the hub, for a hub id) to see
        # whether the vocabulary was resized; a trial never resizes it, so the full embedding
        # matrix is never needed and saving makes no network call
        peft_model.save_pretrained(folder, save_embedding_layers=False)
        (folder / "llmhpo_trial.json").write_text(json.dumps(
            {"params": params, "knobs": knobs, "model": self.cfg.model.name,
             "target_modules": list(self.cfg.model.target_modules)}, indent=1, default=str))
        return str(folder.resolve())

    # ------------------------------------------------------------------ base model score
    def base(self) -> Result:
        """The base model scored as a trial is (no adapter): the reference every trial is
        compared with."""
        from llmhpo.objectives.finetune.evaluate import evaluate, objective_value

        t0 = time.time()
        if self.model is None or self._tm is None or self._records is None:
            progress("loading")
        self.setup()
        t1 = time.time()
        metrics = evaluate(self.model, self.tokenizer, self._tm, self.cfg.eval)
        timings = {"setup": t1 - t0, "eval": time.time() - t1, "total": time.time() - t0}
        return Result(objective_value(metrics, self.cfg.eval.objective), metrics, timings)


def _out_of_memory(what: str, memory) -> TrialFailed:
    """The failed trial of an out-of-memory error, with the peaks it reached."""
    memory.stop()
    err = TrialFailed(f"{what}; lower [eval] batch_size, batch_size or max_seq_len")
    err.metrics = memory.metrics()
    return err


__all__ = ["FinetuneConfig", "FinetuneObjective"]
