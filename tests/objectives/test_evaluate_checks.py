"""The task checks run before the first trial (each failure is one line naming the fix), and a
quiet evaluation (no progress bars, no ``fatal: not a git repository``). Offline, seconds."""

import json
import os
import shutil
import subprocess

import pytest

from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune.config import EvalConfig
from llmhpo.objectives.finetune.evaluate import check_tasks, evaluate, task_manager

_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory):
    """A folder of the user's own tasks: my_ok (its data written here, so new to the datasets
    cache in every session) and my_missing (its data file is not there)."""
    folder = tmp_path_factory.mktemp("user-tasks")
    rows = [{"prompt": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2} for i in range(8)]
    (folder / "ok.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "my_ok.yaml").write_text(_YAML.format(task="my_ok", path=folder / "ok.jsonl"))
    (folder / "my_missing.yaml").write_text(_YAML.format(task="my_missing", path=folder / "gone" / "missing.jsonl"))
    return folder


@pytest.fixture(scope="module")
def tm(user_tasks):
    return task_manager(EvalConfig(include_path=(str(user_tasks),)))  # indexes lm-eval's tasks: ~6 s


def cfg(user_tasks, tasks, objective, **kw):
    return EvalConfig(tasks=tasks, objective=objective, include_path=(str(user_tasks),), **kw)


@pytest.fixture(scope="module")
def tiny_model(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama)


def test_unknown_task_names_the_builtin_tasks(tm, user_tasks):
    with pytest.raises(ObjectiveSetupError) as e:
        check_tasks(tm, cfg(user_tasks, ("llmhpo_nope",), "llmhpo_nope/acc"))
    msg = str(e.value)
    assert "task 'llmhpo_nope' is not known" in msg and "llmhpo_add" in msg and "\n" not in msg


def test_missing_data_file_names_the_task_and_the_file(tm, user_tasks):
    with pytest.raises(ObjectiveSetupError) as e:
        check_tasks(tm, cfg(user_tasks, ("llmhpo_add", "my_missing"), "llmhpo_add/acc"))
    msg = str(e.value)
    assert "task 'my_missing' cannot load its data" in msg
    assert str(user_tasks / "gone" / "missing.jsonl") in msg and str(user_tasks / "my_missing.yaml") in msg
    assert "\n" not in msg


@pytest.mark.skipif(os.environ.get("HF_DATASETS_OFFLINE") != "1", reason="needs HF_DATASETS_OFFLINE=1")
def test_hub_task_without_network_names_the_task_and_the_way_out(tm, user_tasks):
    with pytest.raises(ObjectiveSetupError) as e:
        check_tasks(tm, cfg(user_tasks, ("hellaswag",), "hellaswag/acc_norm"))
    msg = str(e.value)
    assert "task 'hellaswag' cannot load its data" in msg and "Rowan/hellaswag" in msg
    assert "include_path" in msg and "\n" not in msg


def test_objective_metric_typo_lists_the_metrics_the_task_reports(tm, user_tasks):
    with pytest.raises(ObjectiveSetupError) as e:
        check_tasks(tm, cfg(user_tasks, ("llmhpo_add", "llmhpo_general"), "llmhpo_add/accuracy"))
    assert str(e.value) == ("[eval] objective = 'llmhpo_add/accuracy': task llmhpo_add reports acc, acc_norm; "
                            "use one of llmhpo_add/acc, llmhpo_add/acc_norm")
    with pytest.raises(ObjectiveSetupError, match=r"task my_ok reports acc; use one of my_ok/acc$"):
        check_tasks(tm, cfg(user_tasks, ("my_ok",), "my_ok/acc_norm"))


def test_builtin_tasks_pass_and_are_built_once(tm, user_tasks, tiny_model, monkeypatch):
    import datasets

    c = cfg(user_tasks, ("llmhpo_add", "llmhpo_general"), "llmhpo_general/acc_norm", limit=4)
    info = check_tasks(tm, c)
    assert info.startswith("llmhpo_add: acc, acc_norm; llmhpo_general: acc, acc_norm")

    def no_second_load(*a, **k):
        raise AssertionError("evaluate loaded a task's data again")

    monkeypatch.setattr(datasets, "load_dataset", no_second_load)
    metrics = evaluate(*tiny_model, tm, c)
    assert {"llmhpo_add/acc", "llmhpo_general/acc_norm"} <= set(metrics)


def test_checks_and_evaluation_are_quiet(tm, user_tasks, tiny_model, tmp_path, monkeypatch, capfd):
    from tqdm import tqdm

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    list(tqdm(range(3)))  # control: bars can be drawn in this process (tqdm reads TQDM_DISABLE on import)
    if "it/s" not in capfd.readouterr().err:
        pytest.skip("TQDM_DISABLE was set when tqdm was imported: no bar can show")
    monkeypatch.chdir(tmp_path)  # not a git repository: `git describe` would print "fatal: ..."
    if shutil.which("git") and subprocess.run(["git", "rev-parse"], capture_output=True).returncode == 0:
        pytest.skip("the temporary folder is inside a git repository: git would print nothing")
    c = cfg(user_tasks, ("my_ok", "llmhpo_add"), "my_ok/acc", limit=4)
    check_tasks(tm, c)  # builds my_ok: its data is new to the datasets cache
    metrics = evaluate(*tiny_model, tm, c)
    out = capfd.readouterr()
    text = out.out + out.err
    assert "my_ok/acc" in metrics
    assert "fatal:" not in text and "it/s" not in text and "%|" not in text, text
