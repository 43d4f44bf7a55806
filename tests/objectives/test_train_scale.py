"""The training loop at real scale, on the tiny random Llama: the loss normalised over the
whole optimiser step, the micro-batch that halves on out-of-memory, padding-free packing,
gradient checkpointing, and data parallelism over torch.distributed (gloo, two processes)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from llmhpo.errors import TrialFailed
from llmhpo.objectives.finetune import train as train_lib
from llmhpo.objectives.finetune.config import DataConfig, TrainConfig
from llmhpo.objectives.finetune.data import IGNORE, load_records, pack, split, tokenize

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
BASE = TrainConfig(learning_rate=1e-2, lora_rank=4, lora_dropout=0.0, max_steps=6, batch_size=8, max_seq_len=64)


def load(folder):
    """(base model with frozen weights, tokenizer, tokenised training data)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = DataConfig(max_examples=120, val_examples=16)
    train, _ = split(load_records(cfg), cfg)
    return model, tok, tokenize(train, tok, "alpaca", 64)


@pytest.fixture(scope="module")
def setup(tiny_llama):
    return load(tiny_llama)


def run(setup, settings=BASE, **kw):
    """A fresh adapter (seeded as a trial's) trained by train(); the base model is left bare.
    Returns (stats, state, adapter weights)."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    model, tok, data = setup
    torch.manual_seed(settings.seed)
    pm = get_peft_model(model, train_lib.lora_config(settings, TARGETS))
    try:
        stats, state = train_lib.train(pm, data, settings, tok.pad_token_id, "cpu", **kw)
        return stats, state, {k: v.clone() for k, v in get_peft_model_state_dict(pm).items()}
    finally:
        pm.unload()


@pytest.fixture(scope="module")
def reference(setup):
    return run(setup)


def test_a_step_is_normalised_over_its_whole_effective_batch(setup, reference):
    """8 x 1, 4 x 2 and 2 x 4 are the same steps: the loss of each is the mean over all the
    response tokens of its 8 examples, however they are cut into forward passes."""
    for bs, accum in ((4, 2), (2, 4)):
        stats, _, _ = run(setup, replace(BASE, batch_size=bs, grad_accum=accum))
        np.testing.assert_allclose(stats.losses, reference[0].losses, rtol=1e-5)
    assert reference[0].micro_batch == 8 and reference[0].oom_backoffs == 0


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_step(setup, reference):
    stats, state, adapter = run(setup, inject_oom_above=2)
    assert stats.micro_batch == 2 and stats.oom_backoffs == 2 and state["micro_batch"] == 2
    np.testing.assert_allclose(stats.losses, reference[0].losses, rtol=1e-5)
    for k, v in reference[2].items():
        torch.testing.assert_close(adapter[k], v, rtol=1e-4, atol=1e-6)
    assert stats.tokens == reference[0].tokens  # the redone steps are counted once


def test_out_of_memory_at_micro_batch_1_fails_naming_the_memory(setup):
    with pytest.raises(TrialFailed, match=r"out of memory at micro-batch 1 \(max_seq_len 64\): needed 3\.1 GiB "
                                          r"more; set \[train\] gradient_checkpointing = true"):
        run(setup, inject_oom_above=0)


def test_memory_note_reads_torch_s_message():
    msg = ("CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of 79.19 GiB of which "
           "300.00 MiB is free.")
    assert train_lib.memory_note(torch.OutOfMemoryError(msg), "cpu") == "needed 0.5 GiB more"
    assert train_lib.memory_note(RuntimeError("out of memory"), "cpu") == "RuntimeError"


def test_the_next_rung_starts_at_the_smaller_micro_batch(setup, reference):
    model, tok, data = setup
    first, state, _ = run(setup, inject_oom_above=4, until=3)
    assert first.micro_batch == 4 and state["micro_batch"] == 4
    from peft import get_peft_model

    torch.manual_seed(BASE.seed)
    pm = get_peft_model(model, train_lib.lora_config(BASE, TARGETS))
    try:  # no injection now: the rung goes on at 4 without another out-of-memory error
        rest, _ = train_lib.train(pm, data, BASE, tok.pad_token_id, "cpu", resume=state)
    finally:
        pm.unload()
    assert rest.micro_batch == 4 and rest.oom_backoffs == 0 and len(rest.losses) == 6


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_do_not_see_each_other(setup, attn):
    """transformers builds a block-diagonal causal mask from position_ids that restart at 0
    (masking_utils.find_packed_sequence_indices): each packed example's logits are its own."""
    model, _, data = setup
    model.set_attn_implementation(attn)
    try:
        ids, pos, _ = pack(data.input_ids[:3], data.labels[:3])
        with torch.no_grad():
            packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
            start = 0
            for x in data.input_ids[:3]:
                alone = model(input_ids=torch.tensor([x]), use_cache=False).logits[0]
                torch.testing.assert_close(packed[start: start + len(x)], alone, rtol=1e-4, atol=1e-5)
                start += len(x)
    finally:
        model.set_attn_implementation("sdpa")


def test_pack_restarts_positions_and_masks_each_first_label():
    ids, pos, lab = pack([[5, 6, 7], [8, 9]], [[IGNORE, 6, 7], [8, 9]])
    assert ids.tolist() == [[5, 6, 7, 8, 9]] and pos.tolist() == [[0, 1, 2, 0, 1]]
    assert lab.tolist() == [[IGNORE, 6, 7, IGNORE, 9]]


def test_packing_gives_the_loss_curve_and_validation_loss_of_padded_batches(setup, reference):
    model, tok, data = setup
    stats, _, _ = run(setup, replace(BASE, packing=True))
    np.testing.assert_allclose(stats.losses, reference[0].losses, rtol=1e-5)
    assert stats.tokens == reference[0].tokens
    padded = train_lib.validation_loss(model, data, tok.pad_token_id, "cpu", batch_size=8)
    packed = train_lib.validation_loss(model, data, tok.pad_token_id, "cpu", batch_size=8, packing=True)
    assert packed == pytest.approx(padded, rel=1e-5)


def test_rung_continuation_stays_exact_with_packing(setup):
    """4 -> 12 steps gives the weights and curve of one 12-step run, dropout on."""
    model, tok, data = setup
    settings = replace(BASE, packing=True, max_steps=12, lora_dropout=0.1, scheduler="cosine", warmup_ratio=0.1)
    straight, _, straight_adapter = run(setup, settings)
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(settings.seed)
    pm = get_peft_model(model, train_lib.lora_config(settings, TARGETS))
    try:
        first, state = train_lib.train(pm, data, settings, tok.pad_token_id, "cpu", until=4)
        rest, _ = train_lib.train(pm, data, settings, tok.pad_token_id, "cpu", resume=state)
        adapter = get_peft_model_state_dict(pm)
    finally:
        pm.unload()
    assert len(first.losses) == 4
    np.testing.assert_allclose(rest.losses, straight.losses, rtol=1e-5)
    assert adapter.keys() == straight_adapter.keys()
    for k, v in straight_adapter.items():
        torch.testing.assert_close(adapter[k], v, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_same_curve_and_off_after_the_trial(setup, reference):
    model = setup[0]
    layer = model.model.layers[0]
    seen = []
    hook = layer.register_forward_pre_hook(lambda m, _: seen.append(m.training and m.gradient_checkpointing))
    try:
        stats, _, _ = run(setup, replace(BASE, gradient_checkpointing=True))
    finally:
        hook.remove()
    assert seen and all(seen)  # on for every training forward pass
    np.testing.assert_allclose(stats.losses, reference[0].losses, rtol=1e-5)
    # the base model is shared by the worker's later trials: they run without it
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert not getattr(model, "_require_grads_hooks", None)
    np.testing.assert_allclose(run(setup)[0].losses, reference[0].losses, rtol=0)


def _rank(rank: int, world: int, folder: str, out: str) -> None:
    """One data-parallel rank: the tiny model loaded as every rank loads it, two runs."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/group", rank=rank, world_size=world)
    try:
        setup = load(folder)
        plain = run(setup)[0]
        backed_off = run(setup, replace(BASE, packing=True), inject_oom_above=2)[0]
        torch.save({"plain": plain, "backed_off": backed_off}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes that each import torch and transformers (~10 s)
def test_two_data_parallel_ranks_give_the_curve_of_one_process(tiny_llama, tmp_path, reference):
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(2, str(tiny_llama), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for got in ranks:
        for run_ in ("plain", "backed_off"):
            np.testing.assert_allclose(got[run_].losses, reference[0].losses, rtol=1e-5)
            assert got[run_].tokens == reference[0].tokens
        assert got["backed_off"].micro_batch == 2 and got["backed_off"].oom_backoffs == 2
    assert ranks[0]["plain"].losses == ranks[1]["plain"].losses


@pytest.mark.slow  # two trials with lm-eval scoring (~25 s)
def test_a_trial_records_its_micro_batch_and_the_next_rung_starts_there(tiny_llama, tmp_path):
    from llmhpo.objectives import Fidelity
    from llmhpo.objectives.finetune import FinetuneObjective
    from llmhpo.objectives.finetune.config import FinetuneConfig

    sections = {"model": {"name": str(tiny_llama)}, "data": {"dataset": "builtin:add", "max_examples": 64,
                                                             "val_examples": 8},
                "train": {"batch_size": 8, "max_seq_len": 64, "save_adapters": False, "output_dir": str(tmp_path)},
                "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 4, "n_questions": 8,
                         "base": False}}
    obj = FinetuneObjective(FinetuneConfig.from_sections(sections, "t"))
    first = obj({}, fidelity=Fidelity("max_steps", 2, 4, str(tmp_path / "ck")), inject_oom_above=2)
    assert first.metrics["micro_batch"] == 2 and first.metrics["oom_backoffs"] == 2
    second = obj({}, fidelity=Fidelity("max_steps", 4, 4, str(tmp_path / "ck")))
    assert second.metrics["micro_batch"] == 2 and second.metrics["oom_backoffs"] == 0


@pytest.mark.parametrize("packing", [False, True])
def test_the_head_on_response_positions_gives_the_models_own_loss(setup, packing):
    """response_loss applies the output head to the response positions only; its sum is the
    model's own loss (every position's logits) times the number of response tokens, and so are
    its gradients."""
    from peft import get_peft_model

    model, tok, data = setup
    torch.manual_seed(0)
    pm = get_peft_model(model, train_lib.lora_config(BASE, TARGETS))
    try:
        inputs = train_lib.batch_inputs(data, list(range(8)), tok.pad_token_id, packing, "cpu")
        n = int((inputs["labels"][:, 1:] != IGNORE).sum())
        ours = train_lib.response_loss(pm, inputs)
        ours.backward()
        grads = [p.grad.clone() for p in pm.parameters() if p.requires_grad]
        pm.zero_grad(set_to_none=True)
        theirs = pm(**inputs, use_cache=False).loss * n
        theirs.backward()
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        for g, p in zip(grads, [p for p in pm.parameters() if p.requires_grad]):
            assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-7)
    finally:
        pm.unload()
