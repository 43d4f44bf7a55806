"""The memory estimate of a LoRA trial: exact parameter counts (against published sizes and
against transformers + peft themselves), the direction of every knob, and the most demanding
configuration of a study's space."""

from dataclasses import replace

import pytest

from llmhpo.objectives.finetune.config import FinetuneConfig
from llmhpo.objectives.finetune.memory import (GIB, SHAPES, Knobs, Shapes, demanding_knobs, estimate, lora_params,
                                               memory_check, shapes_from_config, suggestions, table_shapes,
                                               weight_bytes)
from llmhpo.space import SearchSpace

LLAMA_1B = SHAPES["meta-llama/Llama-3.2-1B"]
LLAMA_8B = SHAPES["meta-llama/Llama-3.1-8B"]


def test_the_table_gives_the_published_parameter_counts():
    # model cards / safetensors metadata: 1.24 B, 3.21 B, 8.03 B, 7.24 B, 494 M, 2.61 B
    assert LLAMA_1B.params() == 1_235_814_400  # also what benchmarks/gpu_trial.py counted on the GPU
    assert SHAPES["meta-llama/Llama-3.2-3B"].params() == 3_212_749_824
    assert LLAMA_8B.params() == 8_030_261_248
    assert SHAPES["mistralai/Mistral-7B-v0.1"].params() == 7_241_732_096
    assert abs(SHAPES["Qwen/Qwen2.5-0.5B"].params() - 494_032_768) < 0.001 * 494e6  # + q/k/v biases
    assert abs(SHAPES["google/gemma-2-2b"].params() - 2_614_341_888) < 0.001 * 2.6e9  # + its 2 extra norms


def test_instruct_variants_share_their_base_shapes():
    assert table_shapes("meta-llama/Llama-3.2-1B-Instruct") == LLAMA_1B
    assert table_shapes("google/gemma-2-2b-it") == SHAPES["google/gemma-2-2b"]
    assert table_shapes("someone/unknown-7B") is None


def test_hand_checked_weights_and_lora():
    bf16 = Knobs(lora_rank=16)
    assert weight_bytes(LLAMA_1B, bf16) == 2 * 1_235_814_400
    assert weight_bytes(LLAMA_1B, replace(bf16, dtype="float32")) == 4 * 1_235_814_400
    # r 16 on q, k, v, o: 16 x (2048+2048 + 2048+512 + 2048+512 + 2048+2048) x 16 layers, as peft counted on the GPU
    assert lora_params(LLAMA_1B, bf16) == 3_407_872
    dora = lora_params(LLAMA_1B, replace(bf16, use_dora=True))
    assert dora - 3_407_872 == 16 * (2048 + 512 + 512 + 2048)  # one magnitude per output row


def test_four_bit_weights_are_about_a_quarter_of_bf16():
    bf16 = weight_bytes(LLAMA_8B, Knobs())
    nf4 = weight_bytes(LLAMA_8B, Knobs(quantization="4bit"))
    int8 = weight_bytes(LLAMA_8B, Knobs(quantization="8bit"))
    # the blocks shrink ~3.9x; embeddings and lm_head (1.05 B of 8.03 B) go to fp32 (peft's kbit preparation)
    assert 0.5 < nf4 / bf16 < 0.6 and nf4 < int8 < 0.8 * bf16
    rest = 2 * LLAMA_8B.vocab * LLAMA_8B.hidden + 65 * LLAMA_8B.hidden  # embeddings, lm_head, norms
    blocks = LLAMA_8B.params() - rest
    buffers = 2 * LLAMA_8B.vocab * LLAMA_8B.hidden + 2 * 4096 * 14336  # lm_head's bf16 copy, one de-quantised MLP weight
    four = nf4 - 4 * rest - buffers
    assert 2 / 4 < four / blocks < 2 / 3.85  # 4 bits + the double-quantised constants: 3.9x less than bf16


@pytest.mark.parametrize("knob, values", [("lora_rank", (2, 8, 32, 128)), ("batch_size", (1, 2, 8, 32)),
                                           ("max_seq_len", (64, 256, 1024, 4096))])
@pytest.mark.parametrize("base", [Knobs(), Knobs(gradient_checkpointing=True, quantization="4bit", use_dora=True),
                                  Knobs(target_modules=("all-linear",), attn_implementation="eager")])
def test_the_estimate_grows_strictly_with_rank_batch_and_length(knob, values, base):
    totals = [estimate(LLAMA_1B, replace(base, **{knob: v})).total for v in values]
    assert all(a < b for a, b in zip(totals, totals[1:])), totals


def test_checkpointing_keeps_far_fewer_activations():
    k = Knobs(batch_size=8, max_seq_len=1024)
    full, ckpt = estimate(LLAMA_8B, k), estimate(LLAMA_8B, replace(k, gradient_checkpointing=True))
    assert ckpt.activations < full.activations / 8
    assert ckpt.weights == full.weights and ckpt.logits == full.logits


def test_attention_kernels_order_the_activations():
    k = Knobs(batch_size=4, max_seq_len=2048)
    act = {impl: estimate(LLAMA_8B, replace(k, attn_implementation=impl)).activations
           for impl in ("flash_attention_2", "sdpa", "eager")}
    assert act["flash_attention_2"] < act["sdpa"] < act["eager"]  # no repeated k/v; then the a*s scores


def test_data_parallel_splits_the_micro_batch_and_all_linear_adds_adapters():
    k = Knobs(batch_size=16, max_seq_len=512)
    one, four = estimate(LLAMA_1B, k), estimate(LLAMA_1B, replace(k, gpus_per_trial=4))
    assert four.tokens == one.tokens // 4 and four.total < one.total
    assert lora_params(LLAMA_1B, replace(k, target_modules=("all-linear",))) > 2 * lora_params(LLAMA_1B, k)


def test_close_to_what_the_h200_measured():
    # docs/benchmarks.md: Llama-3.2-1B shapes, r 16 on q/k/v/o, bf16, 512 tokens: max_memory_allocated
    for batch, measured in ((8, 14.40), (32, 50.36)):
        est = estimate(LLAMA_1B, Knobs(lora_rank=16, batch_size=batch, max_seq_len=512)).allocated / GIB
        assert abs(est - measured) / measured < 0.1, (batch, est)


@pytest.mark.slow  # the tiny_llama fixture trains a tokenizer (~12 s)
def test_shapes_from_the_models_own_config_count_its_parameters(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shapes = shapes_from_config(AutoConfig.from_pretrained(tiny_llama))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert shapes.params() == sum(p.numel() for p in model.parameters())
    for target, dora in ((["q_proj", "v_proj"], False), ("all-linear", True)):
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                    LoraConfig(r=4, target_modules=target, use_dora=dora, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        knobs = Knobs(lora_rank=4, target_modules=tuple(target) if isinstance(target, list) else (target,),
                      use_dora=dora)
        assert lora_params(shapes, knobs) == trainable


def _study(space=None, **train):
    fc = FinetuneConfig.from_sections({"model": {"name": "meta-llama/Llama-3.1-8B"}, "train": train})
    return fc, (SearchSpace.from_dict(space) if space else None)


def test_the_most_demanding_configuration_takes_each_upper_bound():
    fc, space = _study({"lora_rank": {"type": "int", "low": 4, "high": 64},
                        "max_seq_len": {"type": "categorical", "choices": [256, 2048, 1024]},
                        "lora_dropout": {"type": "float", "low": 0.0, "high": 0.2}},
                       batch_size=12, max_seq_len=128, lora_dropout=0.0)
    k = demanding_knobs(fc, space)
    assert (k.lora_rank, k.batch_size, k.max_seq_len, k.lora_dropout) == (64, 12, 2048, 0.2)
    assert demanding_knobs(fc, None).lora_rank == fc.train.lora_rank


def test_memory_check_says_what_fits_and_what_would(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fc, space = _study(None, lora_rank=16, batch_size=4, max_seq_len=1024)
    lines, problems = memory_check(fc, space, [("GPU 0 (NVIDIA A100", 80 * GIB)])
    assert problems == [] and "table of model shapes" in lines[0]
    assert lines[1].startswith("memory: GPU 0 (NVIDIA A100, 80.0 GiB): fits (") and lines[1].endswith(" GiB to spare)")
    lines, problems = memory_check(fc, space, [("", 24 * GIB)])
    assert len(problems) == 1
    first, fixes = problems[0].split("; a GPU of 24.0 GiB does not fit it: ")
    assert first.startswith("memory: the most demanding configuration (r 16, batch 4, 1024 tokens) needs about ")
    # neither switch alone is enough; both are, and so are shorter sequences
    assert fixes.startswith("set [train] gradient_checkpointing = true and [model] quantization = \"4bit\" (about ")
    assert fixes.split(", or ")[1].startswith("set [train] max_seq_len = 128 (about ")
    _, problems = memory_check(fc, space, [("", 80 * GIB)], gpus_per_trial=0.5)  # two trials share each GPU
    assert "a GPU of 80.0 GiB, 0.5 of it per trial does not fit it" in problems[0]


def test_suggestions_come_cheapest_first_and_each_fits():
    k = Knobs(lora_rank=16, batch_size=8, max_seq_len=1024)
    budget = estimate(LLAMA_1B, k).total - 1
    found = suggestions(LLAMA_1B, k, budget)
    assert found[0].startswith("set [train] gradient_checkpointing = true (about ")
    assert found[1].startswith("set [train] batch_size = 4 with grad_accum x 2")
    for line in found:
        assert float(line.rsplit("(about ", 1)[1].split(" GiB")[0]) <= budget / GIB + 0.05
    assert "[space] batch_size high = 4" in suggestions(LLAMA_1B, k, budget, frozenset({"batch_size"}))[1]
    tiny = suggestions(LLAMA_8B, k, 2 * GIB)
    assert tiny == [tiny[0]] and tiny[0].startswith("even with gradient checkpointing, 4-bit weights and batch_size 1")


def test_unknown_shapes_give_no_estimate_and_no_problem(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fc = FinetuneConfig.from_sections({"model": {"name": "someone/unknown-7B"}})
    lines, problems = memory_check(fc, None, [("", 24 * GIB)])
    assert problems == [] and lines[0].startswith("memory: no estimate: no config.json for someone/unknown-7B")
    assert isinstance(LLAMA_1B, Shapes)


@pytest.mark.parametrize("example, gib", [("llama31-8b-alpaca-hellaswag-qlora.toml", 24),
                                          ("llama32-3b-alpaca-hellaswag-4gpu.toml", 80)])
def test_the_gpu_examples_fit_the_gpus_they_are_for(monkeypatch, example, gib):
    from pathlib import Path

    from llmhpo.config import load_config
    from llmhpo.errors import ConfigError
    from llmhpo.preflight import check_memory

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / example)
    except ConfigError as e:  # quantization and gradient_checkpointing come with their own change
        if "unknown key" in str(e):
            pytest.skip(f"this tree does not know a key of {example} yet: {e}")
        raise
    lines, problems = check_memory(cfg, (gib,))
    assert problems == [] and lines[1].startswith(f"memory: a GPU of {gib}.0 GiB: fits"), lines
    lines, problems = check_memory(cfg, (gib / 2,))  # and the check can fail for them
    assert len(problems) == 1


@pytest.mark.slow  # the GPU benchmark's smoke mode on the CPU: tiny shapes, every part (~45 s, lm-eval's tasks)
def test_the_gpu_benchmark_runs_its_smoke_mode_on_the_cpu(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_trial.py"), str(tmp_path / "out.json"),
                        "--cpu", "--smoke"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["smoke"] and out["device"] == "cpu"
    ran, skipped = set(out["cases"]), set(out["skipped"])
    assert {"1b_b8_s512", "1b_b16_s1024", "8b_b4_s512"} <= ran
    assert "1b_4bit_b16_s1024_ckpt" in skipped  # 4-bit needs CUDA
    for name in ("1b_b16_s1024_ckpt", "1b_b16_s1024_varlen_packed"):  # ran, or skipped for a knob this tree lacks
        assert name in ran or "this llmhpo's [train] has no" in out["skipped"][name]
    for name, case in out["cases"].items():
        assert "error" not in case, (name, case)
        if "tokens" in case:
            assert case["tokens"] > 0 and case["tokens_per_s"] > 0 and case["estimate"]["allocated"] > 0
