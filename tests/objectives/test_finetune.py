"""The fine-tuning objective on a tiny random Llama (seconds per trial)."""

import hashlib
import json

import numpy as np
import pytest
import torch

from llmhpo.errors import ObjectiveSetupError, TrialFailed
from llmhpo.objectives.finetune import FinetuneObjective
from llmhpo.objectives.finetune.config import FinetuneConfig
from llmhpo.objectives.finetune.data import IGNORE, tokenize
from llmhpo.objectives.finetune.tasks import alpaca_prompt

PARAMS = {"learning_rate": 1e-2, "lora_rank": 4, "lora_alpha": 16, "lora_dropout": 0.1, "weight_decay": 0.01}


def make(tiny_llama, tmp_path, **train):
    sections = {
        "model": {"name": str(tiny_llama)},
        "data": {"dataset": "builtin:add", "max_examples": 200, "val_examples": 16},
        "train": {"max_steps": 8, "batch_size": 4, "max_seq_len": 64, "output_dir": str(tmp_path), **train},
        "eval": {"tasks": ["llmhpo_add", "llmhpo_general"], "objective": "llmhpo_add/acc", "limit": 8,
                 "n_questions": 20},
    }
    return FinetuneObjective(FinetuneConfig.from_sections(sections, "t"))


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def objective(tiny_llama, tmp_path_factory):
    obj = make(tiny_llama, tmp_path_factory.mktemp("out"))
    obj.setup()
    return obj


@pytest.fixture(scope="module")
def reference(objective):
    """A clean trial of PARAMS: what any later trial of PARAMS must give again."""
    return objective(PARAMS)


def assert_same_trial(r, reference):
    """``r`` is the reference trial again (a failure before it left nothing behind), and its
    value is the accuracy lm-eval reported."""
    assert r.value == r.metrics["llmhpo_add/acc"] and 0 <= r.value <= 1
    assert len(r.metrics["train_loss_curve"]) == 8
    assert r.metrics["train_loss_curve"] == reference.metrics["train_loss_curve"]
    assert r.value == reference.value and r.metrics["val_loss"] == reference.metrics["val_loss"]


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_training_lowers_the_loss(tiny_llama, tmp_path):
    obj = make(tiny_llama, tmp_path, max_steps=30)
    r = obj(dict(PARAMS, learning_rate=1e-2))
    curve = r.metrics["train_loss_curve"]
    assert len(curve) == 30
    assert np.mean(curve[-5:]) < np.mean(curve[:5]) - 1.0
    assert r.metrics["train_tokens_per_s"] > 0 and r.timings["train"] > 0
    assert "val_loss" in r.metrics and r.metrics["peak_memory_mb"] > 0
    assert {"llmhpo_add/acc", "llmhpo_add/acc_norm", "llmhpo_general/acc"} <= set(r.metrics)
    assert r.value == r.metrics["llmhpo_add/acc"]


def test_prompt_tokens_are_masked(objective):
    tok = objective.tokenizer
    rec = {"instruction": "What is 12 + 30?", "input": "", "output": "42"}
    t = tokenize([rec], tok, "alpaca", 256)
    ids, labels = t.input_ids[0], t.labels[0]
    n_prompt = len(tok(alpaca_prompt(rec["instruction"]), add_special_tokens=False)["input_ids"])
    assert all(v == IGNORE for v in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == "42"


def test_alpaca_template_with_input():
    p = alpaca_prompt("Translate", "chat")
    assert "### Input:\nchat" in p and p.endswith("### Response:\n")
    assert "### Input" not in alpaca_prompt("Translate")


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_adapter_is_removed_between_trials_and_base_weights_unchanged(objective):
    before = weights_hash(objective.model)
    objective(PARAMS)
    assert not any("lora_" in n for n, _ in objective.model.named_modules())
    assert weights_hash(objective.model) == before
    objective(dict(PARAMS, lora_rank=8))
    assert weights_hash(objective.model) == before


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_same_params_and_seed_give_the_same_value(objective):
    a, b = objective(PARAMS), objective(PARAMS)
    assert a.value == b.value
    assert a.metrics["train_loss_curve"] == b.metrics["train_loss_curve"]
    assert a.metrics["val_loss"] == b.metrics["val_loss"]


def test_nan_loss_fails_the_trial_early(objective, reference):
    with pytest.raises(TrialFailed, match="diverged at step 3"):
        objective(PARAMS, inject_nan_at=3)
    # the worker goes on: the adapter is gone and the next trial runs as if nothing failed
    assert not any("lora_" in n for n, _ in objective.model.named_modules())
    assert_same_trial(objective(PARAMS), reference)


def test_out_of_memory_is_a_failed_trial_and_the_worker_goes_on(objective, reference, monkeypatch):
    import llmhpo.objectives.finetune.train as train_mod

    real = train_mod.train

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "train", oom)
    with pytest.raises(TrialFailed, match="out of memory"):
        objective(PARAMS)
    monkeypatch.setattr(train_mod, "train", real)
    assert not any("lora_" in n for n, _ in objective.model.named_modules())
    assert_same_trial(objective(PARAMS), reference)


def test_searched_training_knobs_override_the_config(objective):
    r = objective(dict(PARAMS, max_steps=3, batch_size=2))
    assert r.metrics["train_steps"] == 3


def test_adapter_saved_with_its_params(objective):
    r = objective(PARAMS)
    folder = r.metrics["adapter_dir"]
    info = json.loads(open(f"{folder}/llmhpo_trial.json").read())
    assert info["params"] == PARAMS
    cfg = json.loads(open(f"{folder}/adapter_config.json").read())
    assert cfg["r"] == 4 and sorted(cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_local_jsonl_dataset_with_input(tiny_llama, tmp_path):
    rows = [{"instruction": "Add the numbers", "input": f"{i} and {i + 1}", "output": str(2 * i + 1)} for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    obj = make(tiny_llama, tmp_path)
    obj.cfg = FinetuneConfig.from_sections(
        {"model": {"name": str(tiny_llama)}, "data": {"dataset": str(path), "val_examples": 8},
         "train": {"max_steps": 2, "batch_size": 4, "max_seq_len": 256, "output_dir": str(tmp_path),
                   "save_adapters": False},
         "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 4, "n_questions": 20}},
        "t")
    r = obj(PARAMS)
    assert r.metrics["train_steps"] == 2 and "adapter_dir" not in r.metrics


@pytest.mark.parametrize("sections, message", [
    ({"model": {"name": "/nowhere/model"}}, "no such folder or file"),
    ({"model": {"name": "meta-llama/Llama-3.2-1B"}}, "no network (HF_HUB_OFFLINE=1): set [model] name to a local folder"),
    ({"data": {"dataset": "tatsu-lab/alpaca"}}, "no network (HF_DATASETS_OFFLINE=1): set [data] dataset"),
    ({"data": {"dataset": "/nowhere/d.jsonl"}}, "no such file"),
    ({"eval": {"tasks": ["llmhpo_nope"], "objective": "llmhpo_nope/acc"}}, "task 'llmhpo_nope' is not known"),
])
@pytest.mark.slow  # loads the model and lm-eval's task index (7-8 s each)
def test_preflight_names_the_fix(tiny_llama, tmp_path, monkeypatch, sections, message):
    from llmhpo.config import Config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    raw = {"budget": {"trials": 2}, "optimizer": {"name": "random"}, "objective": {"type": "finetune"},
           "model": {"name": str(tiny_llama)}, "train": {"output_dir": str(tmp_path)}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v}
    cfg = Config.from_dict(raw, default_name="t")
    with pytest.raises(ObjectiveSetupError) as e:
        cfg.kind.preflight(cfg.objective, cfg.space)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_finetune_config_errors():
    from llmhpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[train\] has an unknown key 'lr'"):
        FinetuneConfig.from_sections({"train": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match=r"objective task 'hellaswag' is not in \[eval\] tasks"):
        FinetuneConfig.from_sections({"eval": {"objective": "hellaswag/acc_norm"}})
    from llmhpo.space import Float, SearchSpace

    with pytest.raises(ConfigError, match=r"\[space\] momentum is not a training knob"):
        FinetuneConfig.from_sections({}).check(SearchSpace([Float("momentum", 0, 1)]))


def test_eval_limit_is_a_count_a_fraction_or_the_whole_task():
    from llmhpo.errors import ConfigError

    assert FinetuneConfig.from_sections({}).eval.limit is None  # no limit: the whole task
    assert FinetuneConfig.from_sections({"eval": {"limit": "all"}}).eval.limit is None
    assert FinetuneConfig.from_sections({"eval": {"limit": 0.5}}).eval.limit == 0.5
    assert FinetuneConfig.from_sections({"eval": {"limit": 40}}).eval.limit == 40
    for bad in (0, 1.5, -3, "half", True):
        with pytest.raises(ConfigError, match=r"\[eval\] limit"):
            FinetuneConfig.from_sections({"eval": {"limit": bad}})


def test_adapters_name_the_model_another_machine_can_load():
    from llmhpo.objectives.finetune.config import ModelConfig
    from llmhpo.objectives.finetune.model import portable_name

    assert portable_name(ModelConfig()) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_name(ModelConfig(name="meta-llama/Llama-3.2-1B")) == "meta-llama/Llama-3.2-1B"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    cfg = FinetuneConfig.from_sections(
        {"model": {"name": "models/m"}, "data": {"dataset": "d.jsonl"},
         "train": {"output_dir": "runs"}, "eval": {"include_path": ["tasks"]}}, "s", tmp_path).resolved()
    assert cfg.model.name == str(tmp_path / "models" / "m") and cfg.data.dataset == str(tmp_path / "d.jsonl")
    assert cfg.train.output_dir == str(tmp_path / "runs") and cfg.eval.include_path == (str(tmp_path / "tasks"),)
    hub = FinetuneConfig.from_sections({"model": {"name": "meta-llama/Llama-3.2-1B"},
                                        "data": {"dataset": "tatsu-lab/alpaca"}}, "s", tmp_path).resolved()
    assert hub.model.name == "meta-llama/Llama-3.2-1B" and hub.data.dataset == "tatsu-lab/alpaca"


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_rungs_4_12_36_end_with_the_weights_of_one_36_step_run(tiny_llama, tmp_path):
    """Multi-fidelity continuation is exact: LoRA weights, AdamW moments, the schedule, the
    data position and dropout's random stream all go on from the checkpoint."""
    from llmhpo.objectives import Fidelity

    obj = make(tiny_llama, tmp_path, scheduler="cosine", warmup_ratio=0.1, save_adapters=False)
    params = dict(PARAMS, lora_dropout=0.1)  # dropout on: its random stream must continue too
    straight = obj(params, fidelity=Fidelity("max_steps", 36, 36, str(tmp_path / "straight")))
    trained = []
    for r in (4, 12, 36):
        res = obj(params, fidelity=Fidelity("max_steps", r, 36, str(tmp_path / "rungs")))
        trained.append(res.metrics["steps_trained_now"])
        assert res.metrics["resource_trained"] == trained[-1]
    assert trained == [4, 8, 24]  # a promoted configuration trains only its extra steps
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "rungs" / "state.pt", weights_only=False)
    assert a["adapter"].keys() == b["adapter"].keys() and a["adapter"]
    for k in a["adapter"]:
        torch.testing.assert_close(a["adapter"][k], b["adapter"][k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["train"]["losses"], b["train"]["losses"], rtol=1e-5)
    assert res.value == straight.value
    # the schedule spans the top rung: at rung 4 the learning rate is still near its peak
    assert b["train"]["scheduler"]["last_epoch"] == 36


@pytest.mark.slow  # real training: several trials or long runs (7-26 s)
def test_epochs_as_the_resource(tiny_llama, tmp_path):
    from llmhpo.objectives import Fidelity

    obj = make(tiny_llama, tmp_path, max_steps=0, save_adapters=False)
    r1 = obj(PARAMS, fidelity=Fidelity("epochs", 0.1, 0.3, str(tmp_path / "e")))
    r2 = obj(PARAMS, fidelity=Fidelity("epochs", 0.3, 0.3, str(tmp_path / "e")))
    n = r1.metrics["train_steps"]
    assert n >= 1 and r2.metrics["train_steps"] == pytest.approx(3 * n, abs=1)
    assert r2.metrics["steps_trained_now"] == r2.metrics["train_steps"] - n


def test_a_trial_reports_its_phases_steps_and_scored_requests(objective):
    from llmhpo._progress import reporting

    seen = []
    with reporting(lambda *report: seen.append(report)):
        objective(dict(PARAMS, max_steps=5))
    phases = list(dict.fromkeys(phase for phase, *_ in seen))
    assert phases == ["training", "validation loss", "scoring", "saving adapter"]
    steps = [(done, total, unit) for phase, done, total, unit in seen if phase == "training"]
    assert steps[0] == (0, 5, "steps") and steps[-1] == (5, 5, "steps")
    scored = [(done, total) for phase, done, total, _ in seen if phase == "scoring" and total is not None]
    assert scored[-1][0] == scored[-1][1] > 0  # every request of the lm-eval call counted
