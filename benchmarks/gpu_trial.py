"""One bf16 LoRA trial on a randomly initialised Llama with Llama-3.2-1B's shapes, on a GPU.

Pretrained weights cannot travel to the GPU machine, so the weights are random; the shapes,
the LoRA set-up, the data path (builtin addition task, Alpaca template, response-only loss),
bf16 autocast, AdamW and the timing code are those of the fine-tuning objective. lm-eval is
not run here (it needs packages the GPU image lacks); the CPU benchmarks cover it.

usage: PYTHONPATH=src python benchmarks/gpu_trial.py TOKENIZER_DIR OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import torch
from peft import get_peft_model
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llmhpo.objectives.finetune.config import DataConfig
from llmhpo.objectives.finetune.data import Tokenized, load_records, split, tokenize
from llmhpo.objectives.finetune.train import lora_config, train, validation_loss

LLAMA_3_2_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                    rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
KNOBS = dict(learning_rate=2e-4, lora_rank=16, lora_alpha=32, lora_dropout=0.05, weight_decay=0.01,
             batch_size=16, grad_accum=1, max_steps=30, epochs=1.0, warmup_ratio=0.0, scheduler="constant",
             max_seq_len=64, max_grad_norm=1.0, seed=0)


def one_trial(model, data, val, knobs, pad_id):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.random.fork_rng(devices=[0]):
        torch.manual_seed(0)
        peft_model = get_peft_model(model, lora_config(knobs, ("q_proj", "k_proj", "v_proj", "o_proj")))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        stats, _ = train(peft_model, data, knobs, pad_id, "cuda", torch.bfloat16, 0)
    torch.cuda.synchronize()
    t = time.time()
    vl = validation_loss(peft_model, val, pad_id, "cuda", autocast_dtype=torch.bfloat16) if val else None
    torch.cuda.synchronize()
    out = {"steps": stats.steps, "tokens": stats.tokens, "train_s": stats.seconds,
           "tokens_per_s": stats.tokens / stats.seconds, "first_loss": stats.losses[0],
           "last_loss": stats.losses[-1], "val_loss": vl, "val_s": time.time() - t,
           "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30, "trainable_params": trainable,
           "batch_size": knobs["batch_size"], "max_seq_len": knobs["max_seq_len"]}
    peft_model.unload()
    return out


def main(tok_dir: str, out_path: str) -> None:
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_3_2_1B, pad_token_id=tok.pad_token_id,
                                             eos_token_id=tok.eos_token_id)).to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "params": sum(p.numel() for p in model.parameters()), "init_s": time.time() - t0}
    train_recs, val_recs = split(load_records(DataConfig(dataset="builtin:add", max_examples=2000, val_examples=64)),
                                 DataConfig(dataset="builtin:add", val_examples=64))
    data = tokenize(train_recs, tok, "alpaca", 64)
    val = tokenize(val_recs, tok, "alpaca", 64)
    one_trial(model, data, val, dict(KNOBS, max_steps=3), tok.pad_token_id)  # warm-up (kernels, allocator)
    result["builtin_add_64"] = one_trial(model, data, val, KNOBS, tok.pad_token_id)
    # Alpaca-sized sequences: 512 tokens, loss on the second half
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (512, 512), generator=g).tolist()
    labels = [[-100] * 256 + x[256:] for x in ids]
    long = Tokenized(ids, labels)
    result["seq512_bs8"] = one_trial(model, long, Tokenized(ids[:32], labels[:32]),
                                     dict(KNOBS, batch_size=8, max_seq_len=512, max_steps=20), tok.pad_token_id)
    result["seq512_bs32"] = one_trial(model, long, None,
                                      dict(KNOBS, batch_size=32, max_seq_len=512, max_steps=10), tok.pad_token_id)
    result["total_s"] = time.time() - t0
    print(json.dumps(result, indent=1))
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
