"""A fine-tuning study end to end through the CLI (tiny model), and the real thing on
SmolLM2-135M with the offline task (slow)."""

import json
import os
import re
import subprocess
import sys

import pytest

STUDY = """
[study]
name = "ft"
[budget]
trials = 3
[optimizer]
name = "random"
[objective]
type = "finetune"
[space]
preset = "paper"
[[warm_start]]
learning_rate = 1e-2
lora_rank = 8
lora_alpha = 16
[model]
name = "{model}"
[data]
dataset = "builtin:add"
max_examples = 100
val_examples = 8
[train]
max_steps = 4
batch_size = 4
output_dir = "{out}"
[eval]
tasks = ["llmhpo_add"]
objective = "llmhpo_add/acc"
limit = 6
n_questions = 20
"""


def cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "llmhpo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow  # fine-tuning studies through the CLI in subprocesses (tens of seconds)
def test_finetune_study_check_run_best_export_merge(tiny_llama, tmp_path):
    (tmp_path / "ft.toml").write_text(STUDY.format(model=tiny_llama, out=tmp_path / "runs"))
    r = cli("check", "ft.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ready" in r.stdout and "tasks: llmhpo_add" in r.stdout
    r = cli("run", "ft.toml", cwd=tmp_path)  # no terminal: one line per trial start, phase and end, nothing else
    assert r.returncode == 0, r.stderr
    assert "3 complete" in r.stdout
    lines = [ln.split("] ", 1)[1] for ln in r.stdout.strip().splitlines()[:-2]]
    # the base model is scored once first (it loads the model), then the trials
    assert lines[0].startswith("scoring the base model"), r.stdout
    base_lines = [ln for ln in lines if ln.startswith("base model")]
    assert base_lines[-1].startswith("base model: value"), r.stdout
    lines = lines[lines.index(base_lines[-1]) + 1:]
    assert len([ln for ln in lines if " started: " in ln or " done in " in ln]) == 3 + 3, r.stdout
    for n in range(3):  # one line per phase, none per step or request
        phases = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(f"trial {n}: ")]
        assert phases[-4:-2] == ["training 4 steps", "validation loss 1 batches"], r.stdout
        assert re.fullmatch(r"scoring \d+ requests", phases[-2]) and phases[-1] == "saving adapter", r.stdout
    assert len(lines) == 3 + 3 + 3 * 4, r.stdout  # the model was loaded for the base model
    assert "fatal:" not in r.stdout + r.stderr and "it/s" not in r.stdout + r.stderr
    import optuna

    st = optuna.load_study(study_name="ft", storage=f"sqlite:///{tmp_path / 'ft.db'}")
    t = st.trials[0]
    assert t.user_attrs["warm_start"] == 0 and t.params["learning_rate"] == pytest.approx(1e-2)
    m = t.user_attrs["metrics"]
    assert {"val_loss", "train_loss_curve", "train_tokens_per_s", "peak_memory_mb", "llmhpo_add/acc"} <= set(m)
    assert {"train", "eval", "model_load"} <= set(t.user_attrs["timings"])
    base = st.user_attrs["base_value"]
    assert base == st.user_attrs["base_metrics"]["llmhpo_add/acc"]
    r = cli("status", "ft.toml", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["base"]["value"] == base
    r = cli("best", "ft.toml", cwd=tmp_path)
    assert f"base model (no adapter): {base:.6g}" in r.stdout, r.stdout
    r = cli("run", "ft.toml", "--trials", "4", cwd=tmp_path)  # resumed: the stored base score is reused
    assert r.returncode == 0 and "base model" not in r.stdout, r.stdout
    r = cli("best", "ft.toml", "--export", "best", "--merge", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    adapter_cfg = json.loads((tmp_path / "best" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_llama)  # the model given, not a cache folder
    assert (tmp_path / "best" / "merged" / "config.json").exists()
    info = json.loads((tmp_path / "best" / "best.json").read_text())
    assert info["value"] == max(t.value for t in st.trials if t.value is not None)
    # the merged model loads and runs
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "best" / "merged")
    assert not any("lora" in n for n, _ in m.named_modules())


def test_missing_model_is_reported_before_the_first_trial(tmp_path):
    (tmp_path / "ft.toml").write_text(STUDY.format(model="/nowhere/model", out=tmp_path / "runs"))
    r = cli("run", "ft.toml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "no such folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ft.db").exists()


@pytest.mark.slow  # fine-tuning studies through the CLI in subprocesses (tens of seconds)
def test_multi_fidelity_finetune_study_through_the_cli(tiny_llama, tmp_path):
    text = (STUDY.format(model=tiny_llama, out=tmp_path / "runs").replace("trials = 3", "resource = 60")
            .replace("limit = 6", "limit = 6\nlow_rung_limit = 3\nbase = false")
            + '[fidelity]\nresource = "max_steps"\nmin = 2\nmax = 18\nscheduler = "asha"\n')
    (tmp_path / "ft.toml").write_text(text)
    r = cli("run", "ft.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rung 1 (6 max_steps, continued) started" in r.stdout
    import optuna

    st = optuna.load_study(study_name="ft", storage=f"sqlite:///{tmp_path / 'ft.db'}")
    assert "base_value" not in st.user_attrs and "base model" not in r.stdout  # [eval] base = false
    assert {t.state.name for t in st.trials} <= {"COMPLETE", "PRUNED"}
    for t in st.trials:
        assert set(t.intermediate_values) <= {2, 6, 18}
        m = t.user_attrs["metrics"]
        assert m["train_steps"] == max(t.intermediate_values)  # its curve covers every step once
        assert len(m["train_loss_curve"]) == m["train_steps"]
    assert sum(max(t.intermediate_values) for t in st.trials) <= 60
    # checkpoints of configurations that can no longer be promoted are gone
    left = list((tmp_path / "llmhpo-runs" / "ft" / "checkpoints").glob("*/state.pt"))
    assert not left
    r = cli("status", "ft.toml", cwd=tmp_path)
    assert "max_steps: " in r.stdout and "spent of 60" in r.stdout


@pytest.mark.slow  # fine-tuning studies through the CLI in subprocesses (tens of seconds)
def test_check_rejects_configs_where_every_trial_would_fail(tiny_llama, tmp_path):
    """A metric the task does not report, and a task whose data file is missing."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_mc.yaml").write_text(
        "task: my_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: missing.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\n"
        "doc_to_target: '{{a}}'\nmetric_list:\n  - metric: acc\n")
    base = STUDY.format(model=tiny_llama, out=tmp_path / "runs")
    cases = {
        "typo": (base.replace('objective = "llmhpo_add/acc"', 'objective = "llmhpo_add/accuracy"'),
                 "task llmhpo_add reports acc, acc_norm; use one of llmhpo_add/acc"),
        "data": (base.replace('tasks = ["llmhpo_add"]', f'tasks = ["my_mc"]\ninclude_path = ["{tmp_path / "tasks"}"]')
                 .replace('objective = "llmhpo_add/acc"', 'objective = "my_mc/acc"'), "missing.jsonl"),
    }
    for case, (text, message) in cases.items():
        (tmp_path / "ft.toml").write_text(text)
        for cmd in ("check", "run"):
            r = cli(cmd, "ft.toml", cwd=tmp_path)
            assert r.returncode == 2 and message in r.stderr, (case, cmd, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "ft.db").exists()


@pytest.mark.slow
def test_smollm2_sensible_learning_rate_beats_extremes(tmp_path):
    """Real SmolLM2-135M-Instruct, real LoRA steps, real lm-eval on held-out questions."""
    pytest.importorskip("transformers")
    from llmhpo.objectives.finetune import FinetuneObjective
    from llmhpo.objectives.finetune.config import FinetuneConfig

    cfg = FinetuneConfig.from_sections(
        {"data": {"dataset": "builtin:add", "max_examples": 400, "val_examples": 16},
         "train": {"max_steps": 12, "batch_size": 8, "max_seq_len": 64, "output_dir": str(tmp_path),
                   "save_adapters": False},
         "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 40}},
        "smol")
    obj = FinetuneObjective(cfg)
    base = dict(lora_rank=8, lora_alpha=16, lora_dropout=0.05, weight_decay=0.01)
    scores = {"base": obj.base().value}  # the model untrained: what a vanishing learning rate leaves
    for lr in (1e-3, 1e-1):
        try:
            scores[lr] = obj(dict(base, learning_rate=lr)).value
        except Exception as e:  # a diverged run scores nothing
            scores[lr] = 0.0 if "diverged" in str(e) else pytest.fail(str(e))
    assert scores[1e-3] > scores["base"] + 0.1, scores
    assert scores[1e-3] > scores[1e-1] + 0.1, scores
