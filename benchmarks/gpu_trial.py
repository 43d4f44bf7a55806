"""LoRA trials at real scale on one GPU, with random weights in Llama-3.2-1B's and Llama-3.1-8B's
shapes: llmhpo's training (``train``) with and without gradient checkpointing, with and without
packing, 4-bit (QLoRA) when bitsandbytes is there; TRL's SFTTrainer beside it when trl is there;
lm-eval scoring of the builtin tasks when lm_eval is there. Every case records its training
tokens/s, the measured peak (torch.cuda.max_memory_allocated) and llmhpo's memory estimate of it
(``objectives/finetune/memory.py``; the target is within 25%).

Pretrained weights cannot travel to a GPU machine without network, so the weights are random
and the tokenizer is a small BPE trained here on the builtin tasks (or --tokenizer DIR); the
shapes, the LoRA set-up and the training code are the objective's. A part whose package is
missing is skipped, with the reason in the JSON; each case starts only while the time budget
lasts (default 540 s, for a 10-minute slot) and only if its estimate fits the free memory.

usage: PYTHONPATH=src python benchmarks/gpu_trial.py OUT.json [--budget 540] [--tokenizer DIR]
       PYTHONPATH=src python benchmarks/gpu_trial.py OUT.json --cpu --smoke   # tiny shapes, CPU, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from llmhpo.objectives.finetune.config import TrainConfig
from llmhpo.objectives.finetune.data import Tokenized
from llmhpo.objectives.finetune.memory import GIB, SHAPES, Knobs, Shapes, estimate
from llmhpo.objectives.finetune.train import lora_config, train

TINY = Shapes(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, tied=True)  # >= the BPE's 1,000
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
HAS = {name: importlib.util.find_spec(name) is not None for name in
       ("bitsandbytes", "trl", "datasets", "lm_eval", "optuna", "accelerate", "flash_attn")}
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


class Run:
    """Where the cases run, the clock, and the JSON being filled."""

    def __init__(self, args):
        self.device = "cpu" if args.cpu else "cuda"
        self.cuda = self.device == "cuda"
        self.dtype = torch.bfloat16 if self.cuda else None  # autocast dtype; fp32 weights on the CPU
        self.t0, self.budget = time.time(), args.budget
        self.smoke, self.path = args.smoke, Path(args.out)
        self.out = {"device": torch.cuda.get_device_name(0) if self.cuda else "cpu", "torch": torch.__version__,
                    "smoke": self.smoke,  # smoke: every case shrunk (tiny shapes); names are the full run's
                    "packages": dict(HAS), "cases": {}, "skipped": {}}

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def skip(self, name: str, why: str) -> None:
        self.out["skipped"][name] = why
        print(f"skip {name}: {why}", flush=True)
        self.save()

    def save(self) -> None:  # after every case: a run cut short keeps what it measured
        self.out["total_s"] = round(time.time() - self.t0, 1)
        self.path.write_text(json.dumps(self.out, indent=1))


def tokenizer(tok_dir: str | None):
    """The tokenizer in ``tok_dir``, or a 1,000-token BPE trained now on the builtin tasks."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if tok_dir:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        tok.pad_token = tok.pad_token or tok.eos_token
        return tok
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmhpo.objectives.finetune.tasks import alpaca_prompt, general_knowledge, instruction_data

    corpus = [alpaca_prompt(r["instruction"]) + r["output"] for r in instruction_data(["add", "sub", "letters"], 300)]
    corpus += [r["question"] + " " + " ".join(r["choices"]) for r in general_knowledge()]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", pad_token="</s>", unk_token="<unk>")


def random_model(shapes: Shapes, run: Run, tok):
    """A randomly initialised Llama of ``shapes``, frozen, on the run's device (bf16 on a GPU)."""
    cfg = LlamaConfig(vocab_size=shapes.vocab, hidden_size=shapes.hidden, intermediate_size=shapes.intermediate,
                      num_hidden_layers=shapes.layers, num_attention_heads=shapes.heads,
                      num_key_value_heads=shapes.kv_heads, tie_word_embeddings=shapes.tied, rope_theta=500000.0,
                      max_position_embeddings=8192, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if run.cuda else torch.float32)  # never an fp32 copy of 8B on the GPU
    try:
        with torch.device(run.device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def token_data(n: int, length: int, vocab: int, varlen: bool = False) -> Tokenized:
    """n random sequences of ``length`` tokens (or length/8..length with ``varlen``), loss on the
    second half of each: the objective's data layout without a dataset."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(2, length // 8), length + 1, (n,), generator=g).tolist() if varlen else [length] * n
    ids = [torch.randint(2, vocab, (k,), generator=g).tolist() for k in lengths]
    return Tokenized(ids, [[-100] * (len(x) // 2) + x[len(x) // 2:] for x in ids])


def settings(**knobs) -> TrainConfig | None:
    """The trial's TrainConfig, or None when this llmhpo lacks one of the knobs (not merged yet)."""
    base = dict(learning_rate=2e-4, lora_rank=16, lora_alpha=32, lora_dropout=0.05, scheduler="constant",
                max_steps=10, save_adapters=False)
    base.update(knobs)
    if any(k not in TRAIN_KEYS for k in base):
        return None
    return TrainConfig(**base)


def free_bytes(run: Run) -> int:
    if not run.cuda:
        return 1 << 62
    free, _ = torch.cuda.mem_get_info()
    return free


def trial_case(run: Run, name: str, model, shapes: Shapes, data: Tokenized, st: TrainConfig, pad_id: int,
               knobs: Knobs, seconds: float, targets=QKVO) -> None:
    """One LoRA training run through llmhpo's ``train``, measured against the estimate."""
    est = estimate(shapes, knobs)
    if run.left() < seconds:
        return run.skip(name, f"{run.left():.0f} s of the time budget left, the case needs about {seconds:.0f} s")
    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if run.cuda else 0
    if est.allocated - est.weights > free_bytes(run) * 0.95:  # the weights are on the GPU already
        return run.skip(name, f"estimate {est.total / GIB:.1f} GiB does not fit: "
                              f"{free_bytes(run) / GIB:.1f} GiB free besides the weights")
    peft_model = get_peft_model(model, lora_config(st, targets))
    try:
        stats, _ = train(peft_model, data, st, pad_id, run.device, run.dtype)
        if run.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if run.cuda else None
    except torch.OutOfMemoryError as e:
        run.out["cases"][name] = {"error": f"out of memory: {str(e).splitlines()[0]}",
                                  "estimate_gib": est.total / GIB}
        return None
    finally:
        peft_model.unload()
        del peft_model
    record(run, name, stats, est, peak, resident, knobs)


def record(run: Run, name: str, stats, est, peak, resident: int, knobs: Knobs) -> None:
    tokens_s = stats.tokens / stats.seconds if stats.seconds else None
    micro = getattr(stats, "micro_batch", None)
    row = {"steps": stats.steps, "tokens": stats.tokens, "train_s": round(stats.seconds, 2),
           "tokens_per_s": tokens_s and round(tokens_s), "first_loss": stats.losses[0], "last_loss": stats.losses[-1],
           "knobs": dataclasses.asdict(knobs), "estimate": {k: round(getattr(est, k) / GIB, 3) for k in
                                                            ("weights", "lora", "activations", "logits", "overhead",
                                                             "allocated", "total")}}
    if micro is not None and micro != knobs.batch_size:
        row["micro_batch_after_oom_backoff"] = micro  # train() halved it: the estimate is of the asked batch
    if peak is not None:
        row["peak_allocated_gib"] = round(peak / GIB, 3)
        row["resident_before_gib"] = round(resident / GIB, 3)
        row["estimate_error"] = round(est.allocated / peak - 1, 3)  # > 0: the estimate is above the peak
    run.out["cases"][name] = row
    run.save()
    print(name, json.dumps({k: row.get(k) for k in ("tokens_per_s", "peak_allocated_gib", "estimate_error")}),
          flush=True)


def llmhpo_cases(run: Run, prefix: str, shapes: Shapes, tok, steps: int, plans) -> None:
    """``plans``: (name, batch, length, extra knobs); each runs on one model of ``shapes``."""
    t = time.time()
    model = random_model(shapes, run, tok)
    run.out[f"{prefix}_init_s"] = round(time.time() - t, 1)
    run.out[f"{prefix}_params"] = sum(p.numel() for p in model.parameters())
    warm = settings(batch_size=2, max_seq_len=64, max_steps=2)
    trial_case(run, f"{prefix}_warmup", model, shapes, token_data(8, 64, shapes.vocab), warm, tok.pad_token_id,
               Knobs(lora_rank=16, batch_size=2, max_seq_len=64, dtype=dtype_of(run)), 5)
    for name, batch, length, extra in plans:
        varlen = extra.pop("varlen", False)
        ckpt = extra.get("gradient_checkpointing", False)
        st = settings(batch_size=batch, max_seq_len=length, max_steps=steps, **extra)
        if st is None:
            run.skip(f"{prefix}_{name}", f"this llmhpo's [train] has no {', '.join(k for k in extra if k not in TRAIN_KEYS)}")
            continue
        knobs = Knobs(lora_rank=st.lora_rank, batch_size=batch, max_seq_len=length, dtype=dtype_of(run),
                      gradient_checkpointing=ckpt, packing=extra.get("packing", False), lora_dropout=st.lora_dropout)
        data = token_data(max(64, 4 * batch), length, shapes.vocab, varlen)
        seconds = (40 if shapes.layers > 20 else 15) * (0.05 if run.smoke else 1)
        trial_case(run, f"{prefix}_{name}", model, shapes, data, st, tok.pad_token_id, knobs, seconds)
    if prefix == "1b":  # lm-eval first: a TRL run that fails part-way may leave its adapter in the model
        lm_eval_case(run, model, tok)
    if HAS["trl"] and HAS["datasets"] and prefix == "1b":
        trl_case(run, model, shapes, tok, steps)
    elif prefix == "1b":
        run.skip("1b_trl_sft", "trl or datasets is not installed (benchmarks/gpu_wheels.sh fetches them)")
    del model
    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()


def dtype_of(run: Run) -> str:
    return "bfloat16" if run.cuda else "float32"


def qlora_case(run: Run, prefix: str, shapes: Shapes, tok, steps: int, batch: int, length: int) -> None:
    """4-bit NF4 base (llmhpo's own loading: [model] quantization) with checkpointing. The random
    bf16 weights are saved to a temporary folder first: bitsandbytes quantises while loading."""
    name = f"{prefix}_4bit_b{batch}_s{length}_ckpt"
    from llmhpo.objectives.finetune import model as model_lib
    from llmhpo.objectives.finetune.config import ModelConfig

    if not run.cuda or not HAS["bitsandbytes"]:
        return run.skip(name, "bitsandbytes is not installed" if run.cuda else "4-bit needs a CUDA GPU")
    if "quantization" not in {f.name for f in dataclasses.fields(ModelConfig)}:
        return run.skip(name, "this llmhpo's [model] has no quantization")
    st = settings(batch_size=batch, max_seq_len=length, max_steps=steps, gradient_checkpointing=True)
    if st is None:
        return run.skip(name, "this llmhpo's [train] has no gradient_checkpointing")
    if run.left() < 90:
        return run.skip(name, f"{run.left():.0f} s of the time budget left, the case needs about 90 s")
    with tempfile.TemporaryDirectory() as folder:
        t = time.time()
        model = random_model(shapes, run, tok)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
        gc.collect()
        torch.cuda.empty_cache()
        model, _ = model_lib.load(ModelConfig(name=folder, quantization="4bit"), "cuda")
        run.out[f"{name}_load_s"] = round(time.time() - t, 1)
    knobs = Knobs(lora_rank=st.lora_rank, batch_size=batch, max_seq_len=length, quantization="4bit",
                  gradient_checkpointing=True, lora_dropout=st.lora_dropout)
    trial_case(run, name, model, shapes, token_data(4 * batch, length, shapes.vocab), st, tok.pad_token_id, knobs, 30)
    del model
    gc.collect()
    torch.cuda.empty_cache()


def trl_case(run: Run, model, shapes: Shapes, tok, steps: int) -> None:
    """TRL's SFTTrainer on the same model, data layout (loss on the second half) and LoRA."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    name = "1b_trl_sft"
    batch, length = (2, 64) if run.smoke else (16, 1024)
    if run.left() < 30:
        return run.skip(name, f"{run.left():.0f} s of the time budget left")
    data = token_data(4 * batch, length, shapes.vocab)
    ds = Dataset.from_dict({"input_ids": data.input_ids,
                            "completion_mask": [[int(v != -100) for v in y] for y in data.labels]})
    with tempfile.TemporaryDirectory() as folder:
        args = SFTConfig(output_dir=folder, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4,
                         lr_scheduler_type="constant", bf16=run.cuda, logging_steps=1, save_strategy="no",
                         report_to=[], max_length=length, completion_only_loss=True, use_cpu=not run.cuda,
                         dataloader_num_workers=0, disable_tqdm=True,
                         gradient_checkpointing=False)  # TRL's default is on; llmhpo's b16_s1024 runs without
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(QKVO), task_type="CAUSAL_LM")
        gc.collect()
        if run.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
            out = trainer.train()
        except Exception as e:  # a TRL version with another API: recorded, the rest goes on
            run.out["cases"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            return run.save()
        peak = torch.cuda.max_memory_allocated() if run.cuda else None
        trainer.model.unload()
    stats = type("Stats", (), {"steps": steps, "tokens": batch * length * steps,
                               "seconds": out.metrics["train_runtime"],
                               "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h] or [None]})
    record(run, name, stats, estimate(shapes, Knobs(lora_rank=16, batch_size=batch, max_seq_len=length,
                                                    dtype=dtype_of(run))), peak, 0,
           Knobs(lora_rank=16, batch_size=batch, max_seq_len=length, dtype=dtype_of(run)))
    run.out["cases"][name]["note"] = "tokens counts padding-free full rows; train_s is TRL's train_runtime"


def lm_eval_case(run: Run, model, tok) -> None:
    """lm-eval on the builtin tasks through llmhpo's scoring (the weights are random: chance
    accuracy; what counts is the time per request)."""
    name = "1b_lm_eval_builtin"
    if not HAS["lm_eval"]:
        return run.skip(name, "lm_eval is not installed (benchmarks/gpu_wheels.sh fetches it)")
    if run.left() < 40:
        return run.skip(name, f"{run.left():.0f} s of the time budget left")
    from llmhpo.objectives.finetune.config import EvalConfig
    from llmhpo.objectives.finetune.evaluate import check_tasks, evaluate, task_manager

    ec = EvalConfig(tasks=("llmhpo_add", "llmhpo_general"), objective="llmhpo_add/acc",
                    limit=20 if run.smoke else 200, batch_size=32)
    t = time.time()
    tm = task_manager(ec)
    check_tasks(tm, ec)
    build_s = time.time() - t
    peft_model = get_peft_model(model, lora_config(settings(), QKVO))
    try:
        t = time.time()
        metrics = evaluate(peft_model, tok, tm, ec)
        seconds = time.time() - t
    finally:
        peft_model.unload()
    run.out["cases"][name] = {"metrics": metrics, "score_s": round(seconds, 2), "task_build_s": round(build_s, 2),
                              "limit": ec.limit}
    run.save()
    print(name, json.dumps(run.out["cases"][name]), flush=True)


def plans(smoke: bool):
    """(name, micro-batch, length, extra [train] knobs) of the 1B and the 8B cases."""
    one_b = [("b8_s512", 8, 512, {}), ("b16_s1024", 16, 1024, {}),
             ("b16_s1024_ckpt", 16, 1024, {"gradient_checkpointing": True}),
             ("b16_s1024_varlen", 16, 1024, {"varlen": True}),
             ("b16_s1024_varlen_packed", 16, 1024, {"varlen": True, "packing": True}),
             ("b32_s2048_ckpt", 32, 2048, {"gradient_checkpointing": True})]
    eight_b = [("b4_s512", 4, 512, {}), ("b8_s1024_ckpt", 8, 1024, {"gradient_checkpointing": True})]

    def shrink(rows):  # smoke: the same cases with a quarter of the batch and an eighth of the length
        return [(name, max(1, batch // 4), length // 8, dict(extra)) if smoke else (name, batch, length, dict(extra))
                for name, batch, length, extra in rows]

    return shrink(one_b), shrink(eight_b)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the JSON file to write (after every case)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (default 540)")
    ap.add_argument("--tokenizer", help="a tokenizer folder; default: a small BPE trained on the builtin tasks")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (fp32, no memory measurement)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and few steps: checks the script in seconds")
    args = ap.parse_args(argv)
    run = Run(args)
    if run.cuda and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; use --cpu --smoke to check the script on the CPU")
    t = time.time()
    tok = tokenizer(args.tokenizer)
    run.out["tokenizer_s"] = round(time.time() - t, 1)
    one_b, eight_b = plans(args.smoke)
    small = TINY if args.smoke else SHAPES["meta-llama/Llama-3.2-1B"]
    large = dataclasses.replace(TINY, layers=3, hidden=96, heads=6, kv_heads=2) if args.smoke \
        else SHAPES["meta-llama/Llama-3.1-8B"]
    steps = 2 if args.smoke else 10
    llmhpo_cases(run, "1b", small, tok, steps, one_b)
    qlora_case(run, "1b", small, tok, steps, 16, 1024)
    llmhpo_cases(run, "8b", large, tok, 2 if args.smoke else 3, eight_b)
    if not args.smoke and run.left() > 150:
        qlora_case(run, "8b", large, tok, 3, 8, 1024)
    else:
        run.skip("8b_4bit_b8_s1024_ckpt", "smoke run" if args.smoke else f"{run.left():.0f} s left, 150 s needed")
    run.save()
    print(f"wrote {run.path} in {time.time() - run.t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
