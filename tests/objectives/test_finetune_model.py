"""The base model at scale: quantisation and attention settings (their errors before any
compute; the CUDA path itself needs a GPU), the LoRA variants DoRA, rsLoRA and all-linear
on the tiny random Llama, and each trial's own peak memory."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmhpo.errors import ConfigError, ObjectiveSetupError
from llmhpo.objectives.finetune import peaks as memory_mod
from llmhpo.objectives.finetune.config import FinetuneConfig, ModelConfig, TrainConfig
from llmhpo.objectives.finetune.model import check_runtime, quantization_config
from llmhpo.objectives.finetune.train import lora_config

from .test_finetune import PARAMS, weights_hash


def make_with(tiny_llama, tmp_path, model=None, **train):
    """The tiny model's objective with these [model] and [train] keys."""
    from llmhpo.objectives.finetune import FinetuneObjective

    return FinetuneObjective(FinetuneConfig.from_sections({
        "model": {"name": str(tiny_llama), **(model or {})},
        "data": {"dataset": "builtin:add", "max_examples": 200, "val_examples": 16},
        "train": {"max_steps": 8, "batch_size": 4, "max_seq_len": 64, "output_dir": str(tmp_path), **train},
        "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 8, "n_questions": 20}}, "t"))

NO_CUDA = "needs a CUDA GPU (bitsandbytes) and the trials would run on the CPU"


# ---------------------------------------------------------------- quantisation and attention
def test_4bit_is_qlora_nf4_with_double_quantisation_and_bf16_compute():
    q = quantization_config(ModelConfig(quantization="4bit"))
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config(ModelConfig(quantization="4bit", dtype="float16")).bnb_4bit_compute_dtype == torch.float16
    q8 = quantization_config(ModelConfig(quantization="8bit"))
    assert q8.load_in_8bit and not q8.load_in_4bit
    assert quantization_config(ModelConfig()) is None


@pytest.mark.parametrize("model, cuda, packages, message", [
    ({"quantization": "4bit"}, False, {"bitsandbytes"}, "[model] quantization = '4bit' " + NO_CUDA),
    ({"quantization": "8bit"}, True, set(), "[model] quantization = '8bit' needs the bitsandbytes package: "
                                            "pip install bitsandbytes"),
    ({"attn_implementation": "flash_attention_2"}, False, {"flash_attn"}, "needs a CUDA GPU"),
    ({"attn_implementation": "flash_attention_2"}, True, set(), "pip install flash-attn --no-build-isolation"),
])
def test_runtime_errors_name_the_fix(monkeypatch, model, cuda, packages, message):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in packages else None if name in ("bitsandbytes", "flash_attn")
                        else real(name, *a))
    with pytest.raises(ConfigError) as e:
        check_runtime(ModelConfig(**model), cuda)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ObjectiveSetupError):
        check_runtime(ModelConfig(**model), cuda, ObjectiveSetupError)


def test_runtime_ready_when_it_has_what_it_needs(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    lines = check_runtime(ModelConfig(quantization="4bit", attn_implementation="flash_attention_2"), True)
    assert lines == ["quantization: 4bit (bitsandbytes)", "attention: flash_attention_2"]
    assert check_runtime(ModelConfig(), False) == ["attention: sdpa"]


def test_model_keys_are_checked():
    with pytest.raises(ConfigError, match=r"quantization = '4-bit' must be \"none\", \"4bit\" or \"8bit\""):
        FinetuneConfig.from_sections({"model": {"quantization": "4-bit"}})
    with pytest.raises(ConfigError, match=r"attn_implementation = 'flash' must be"):
        FinetuneConfig.from_sections({"model": {"attn_implementation": "flash"}})
    with pytest.raises(ConfigError, match="needs bf16 or fp16 weights"):
        FinetuneConfig.from_sections({"model": {"attn_implementation": "flash_attention_2", "dtype": "float32"}})
    with pytest.raises(ConfigError, match="\"all-linear\" alone"):
        FinetuneConfig.from_sections({"model": {"target_modules": ["all-linear", "q_proj"]}})
    assert FinetuneConfig.from_sections({"model": {"target_modules": "all-linear"}}).model.target_modules == (
        "all-linear",)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("false", False), ("True", True),
                                             (np.bool_(False), False), (np.bool_(True), True), (0, False), (1, True)])
def test_boolean_knobs_cast_by_meaning(value, expected):
    assert TrainConfig().with_params({"use_dora": value}).use_dora is expected


def test_a_boolean_knob_refuses_other_values():
    with pytest.raises(ConfigError, match=r"\[train\] use_rslora = 'maybe' must be true or false"):
        TrainConfig().with_params({"use_rslora": "maybe"})


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_quantised_model_is_placed_by_bitsandbytes_and_prepared_for_training(tiny_llama, monkeypatch, checkpointing):
    """The CUDA path's wiring, with transformers and peft stood in for (no GPU here)."""
    import importlib.util

    import peft
    import transformers

    from llmhpo.objectives.finetune import model as model_lib

    seen = {}

    class Loaded:
        def to(self, device):
            pytest.fail("a quantised model was moved")

    def from_pretrained(where, **kwargs):
        seen.update(kwargs)
        return Loaded()

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda m, use_gradient_checkpointing=True: seen.update(prepared=use_gradient_checkpointing) or m)
    model, tok = model_lib.load(ModelConfig(name=str(tiny_llama), quantization="4bit", attn_implementation="eager"),
                                "cuda:0", checkpointing)
    assert isinstance(model, Loaded) and tok.pad_token is not None
    assert seen["quantization_config"].bnb_4bit_quant_type == "nf4" and seen["device_map"] == {"": "cuda:0"}
    assert seen["attn_implementation"] == "eager" and seen["prepared"] is checkpointing


def test_quantization_without_cuda_fails_setup_before_loading(tiny_llama, tmp_path, monkeypatch):
    from llmhpo.objectives.finetune import model as model_lib

    obj = make_with(tiny_llama, tmp_path, {"quantization": "4bit"})
    monkeypatch.setattr(model_lib, "resolve", lambda cfg: pytest.fail("the model was looked for"))
    with pytest.raises(ObjectiveSetupError, match=r"quantization = '4bit' " + NO_CUDA.replace("(", r"\(")
                       .replace(")", r"\)")):
        obj(PARAMS)


@pytest.mark.slow  # two preflights: the model, data and lm-eval task index (about 15 s)
def test_run_and_check_exit_2_before_any_worker_starts(tiny_llama, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import llmhpo.runner.start as start
    from llmhpo.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(start, "make_executor", lambda *a, **k: pytest.fail("a worker was started"))
    (tmp_path / "q.toml").write_text(
        f'[budget]\ntrials = 1\n[optimizer]\nname = "random"\n[objective]\ntype = "finetune"\n'
        f'[model]\nname = "{tiny_llama}"\nquantization = "8bit"\n[train]\noutput_dir = "{tmp_path}"\n')
    for command in ("check", "run"):
        r = CliRunner().invoke(app, [command, str(tmp_path / "q.toml")])
        assert r.exit_code == 2, r.output
        assert "error: [model] quantization = '8bit' " + NO_CUDA in " ".join(r.output.split())


def test_a_ray_cluster_checks_the_gpu_on_its_workers(monkeypatch):
    from llmhpo.config import Config
    from llmhpo.preflight import runs_elsewhere

    raw = {"budget": {"trials": 1}, "optimizer": {"name": "random"}, "objective": {"type": "finetune"},
           "model": {"quantization": "4bit"}}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not runs_elsewhere(Config.from_dict(raw))
    assert not runs_elsewhere(Config.from_dict({**raw, "runner": {"executor": "ray"}}))  # a cluster of its own here
    assert runs_elsewhere(Config.from_dict({**raw, "runner": {"executor": "ray", "address": "auto"}}))
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert runs_elsewhere(Config.from_dict({**raw, "runner": {"executor": "ray"}}))


def test_a_cluster_elsewhere_leaves_the_gpu_check_to_its_workers(monkeypatch):
    from llmhpo.objectives.finetune.kind import _check_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fc = FinetuneConfig.from_sections({"model": {"quantization": "4bit"}})
    with pytest.raises(ConfigError, match=NO_CUDA.replace("(", r"\(").replace(")", r"\)")):
        _check_runtime(fc)
    assert _check_runtime(fc, remote=True) == ["quantization 4bit, attention sdpa: checked by the Ray workers at their set-up"]


def test_new_keys_round_trip_and_stay_out_of_the_tables_at_their_defaults():
    tables = {"model": {"quantization": "8bit", "attn_implementation": "eager", "target_modules": "all-linear"},
              "train": {"use_dora": True, "use_rslora": True}}
    cfg = FinetuneConfig.from_sections(tables)
    written = cfg.to_tables()
    assert FinetuneConfig.from_sections(json.loads(json.dumps(written))) == cfg  # as stored
    assert written["model"]["quantization"] == "8bit" and written["train"]["use_dora"] is True
    plain = FinetuneConfig.from_sections({}).to_tables()
    assert not {"quantization", "attn_implementation"} & set(plain["model"])
    assert not {"use_dora", "use_rslora"} & set(plain["train"])


# ---------------------------------------------------------------- LoRA variants
def test_lora_config_passes_the_variants():
    c = lora_config(TrainConfig(use_dora=True, use_rslora=True), ("all-linear",))
    assert c.use_dora and c.use_rslora and c.target_modules == "all-linear"
    c = lora_config(TrainConfig(), ("q_proj", "v_proj"))
    assert not c.use_dora and not c.use_rslora and set(c.target_modules) == {"q_proj", "v_proj"}


@pytest.fixture(scope="module")
def objective(tiny_llama, tmp_path_factory):
    obj = make_with(tiny_llama, tmp_path_factory.mktemp("out"))
    obj.setup()
    return obj


def _wrapped(objective, settings, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    """{module name: LoRA layer} of the base wrapped with these knobs, then unwrapped."""
    from peft import get_peft_model

    before = weights_hash(objective.model)
    peft_model = get_peft_model(objective.model, lora_config(settings, targets))
    layers = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    objective.model = peft_model.unload()
    assert weights_hash(objective.model) == before and not any("lora_" in n for n, _ in objective.model.named_modules())
    return layers


def test_rslora_scales_by_alpha_over_sqrt_r(objective):
    plain = _wrapped(objective, TrainConfig(lora_rank=4, lora_alpha=16))
    rs = _wrapped(objective, TrainConfig(lora_rank=4, lora_alpha=16, use_rslora=True))
    name = "model.layers.0.self_attn.q_proj"
    assert plain[name].scaling["default"] == pytest.approx(16 / 4)
    assert rs[name].scaling["default"] == pytest.approx(16 / math.sqrt(4))


def test_all_linear_wraps_the_mlp_too_but_not_the_head(objective):
    layers = _wrapped(objective, TrainConfig(), ("all-linear",))
    kinds = {n.rsplit(".", 1)[1] for n in layers}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    attention = _wrapped(objective, TrainConfig())
    assert {n.rsplit(".", 1)[1] for n in attention} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_dora_learns_a_magnitude_per_output(objective):
    layers = _wrapped(objective, TrainConfig(use_dora=True))
    q = layers["model.layers.0.self_attn.q_proj"]
    assert q.lora_magnitude_vector["default"].weight.shape == (q.base_layer.out_features,)
    assert not _wrapped(objective, TrainConfig())["model.layers.0.self_attn.q_proj"].lora_magnitude_vector


@pytest.fixture(scope="module")
def plain(objective):
    """A trial of plain LoRA on the attention projections."""
    return objective(PARAMS)


def _trains_differently(obj, knobs: dict, plain) -> None:
    before = weights_hash(obj.model)
    curve = obj({**PARAMS, **knobs}).metrics["train_loss_curve"]
    assert len(curve) == 8 and all(math.isfinite(x) for x in curve) and np.mean(curve[-3:]) < curve[0]
    assert curve != plain.metrics["train_loss_curve"]  # the variant changed the training
    assert weights_hash(obj.model) == before


@pytest.mark.slow  # short trials on the tiny model (5-15 s)
@pytest.mark.parametrize("knob", ["use_dora", "use_rslora"])
def test_dora_and_rslora_train_differently_and_leave_the_base_as_it_was(objective, plain, knob):
    _trains_differently(objective, {knob: True}, plain)


@pytest.mark.slow  # short trials on the tiny model (5-15 s)
def test_all_linear_trains_differently_and_leaves_the_base_as_it_was(tiny_llama, tmp_path, plain):
    obj = make_with(tiny_llama, tmp_path, {"target_modules": "all-linear"})
    obj.setup()
    _trains_differently(obj, {}, plain)


@pytest.mark.slow  # a two-trial study on the tiny model (about 10 s)
def test_a_space_searching_dora_runs(tiny_llama, tmp_path):
    from llmhpo.config import Config
    from llmhpo.runner import run

    raw = {"study": {"name": "dora", "storage": f"sqlite:///{tmp_path / 'd.db'}"}, "budget": {"trials": 2},
           "optimizer": {"name": "random"}, "objective": {"type": "finetune"}, "runner": {"executor": "inline"},
           "space": {"use_dora": {"type": "categorical", "choices": [True, False]}},
           "warm_start": [{"use_dora": True}, {"use_dora": False}],
           "model": {"name": str(tiny_llama)},
           "data": {"dataset": "builtin:add", "max_examples": 60, "val_examples": 8},
           "train": {"max_steps": 3, "batch_size": 4, "output_dir": str(tmp_path)},
           "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 4, "n_questions": 10,
                    "base": False}}
    summary = run(Config.from_dict(raw), quiet=True)
    assert summary.complete == 2 and summary.failed == 0
    import optuna

    trials = optuna.load_study(study_name="dora", storage=raw["study"]["storage"]).trials
    assert sorted(t.params["use_dora"] for t in trials) == [False, True]
    for t in trials:  # each trial trained what it was given
        saved = json.loads((Path(t.user_attrs["metrics"]["adapter_dir"]) / "adapter_config.json").read_text())
        assert saved["use_dora"] is t.params["use_dora"]


# ---------------------------------------------------------------- peak memory per trial
def _trial_with(n_mb: int, mem) -> dict:
    mem.start()
    block = np.ones(n_mb * 2**20 // 8)  # touched: resident
    del block
    mem.stop()
    return mem.metrics()


@pytest.mark.parametrize("hwm", [True, False], ids=["VmHWM", "sampled"])
def test_a_trial_records_its_own_peak_not_the_workers(monkeypatch, hwm):
    if hwm and not memory_mod.reset_hwm():
        pytest.skip("this kernel cannot reset VmHWM")
    if not hwm:
        monkeypatch.setattr(memory_mod, "reset_hwm", lambda: False)
    mem = memory_mod.TrialMemory(cuda=False, interval=0.01)
    if not hwm:  # the sampler must see the block: hold it for a few samples
        real = np.ones
        monkeypatch.setattr(np, "ones", lambda n: (real(n), __import__("time").sleep(0.2))[0])
    big, small, again = _trial_with(120, mem), _trial_with(1, mem), _trial_with(120, mem)
    assert min(big["peak_rss_mb"], again["peak_rss_mb"]) > small["peak_rss_mb"] + 80
    assert small["peak_memory_mb"] == small["peak_rss_mb"] > 0 and "peak_gpu_memory_mb" not in small


def test_two_trials_in_one_worker_record_their_own_rss_peak(objective, monkeypatch):
    import llmhpo.objectives.finetune.train as train_mod

    real, calls = train_mod.train, []

    def train(*a, **k):  # the first trial holds 120 MB more during its training
        calls.append(1)
        block = np.ones(120 * 2**20 // 8) if len(calls) == 1 else None
        out = real(*a, **k)
        del block
        return out

    monkeypatch.setattr(train_mod, "train", train)
    first, second = objective(PARAMS), objective(PARAMS)
    assert first.metrics["peak_rss_mb"] > second.metrics["peak_rss_mb"] + 80
    assert second.metrics["peak_memory_mb"] == second.metrics["peak_rss_mb"]

