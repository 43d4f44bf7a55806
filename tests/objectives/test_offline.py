"""A study whose model, data and tasks are local makes no network call, with the hub not
switched off (no HF_HUB_OFFLINE); a hub model without network fails in seconds, or loads
from the Hugging Face cache. Run in a fresh process: the hub libraries read HF_HUB_OFFLINE
when imported, and the test session has it set."""

import json
import os
import shutil
import subprocess
import sys

import pytest

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

SCRIPT = r"""
import json, socket, sys, time, traceback

attempts = []


def blocked(what):
    attempts.append(f"{what}: " + traceback.format_stack(limit=8)[0].strip())
    raise OSError(f"network blocked by the test ({what})")


real_connect = socket.socket.connect
socket.socket.connect = lambda self, addr: (blocked(f"connect {addr}") if self.family in
                                            (socket.AF_INET, socket.AF_INET6) else real_connect(self, addr))
socket.getaddrinfo = lambda host, *a, **k: blocked(f"getaddrinfo {host}")

import llmhpo.objectives.finetune.model as model_lib
from llmhpo.config import Config
from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune import FinetuneObjective
from llmhpo.objectives.finetune.config import FinetuneConfig

tiny, out, hub_id = sys.argv[1:4]
# a builtin model's adapter names its hub id, which peft would look up on the hub
model_lib.portable_name = lambda cfg: hub_id
sections = {"model": {"name": tiny},
            "data": {"dataset": "builtin:add", "max_examples": 40, "val_examples": 8},
            "train": {"max_steps": 2, "batch_size": 4, "max_seq_len": 64, "output_dir": out},
            "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 4, "n_questions": 20}}
r = FinetuneObjective(FinetuneConfig.from_sections(sections, "t").resolved())({"learning_rate": 1e-2})
report = {"value": r.value, "adapter_dir": r.metrics["adapter_dir"], "trial_attempts": list(attempts)}


def preflight(name):
    cfg = Config.from_dict({"budget": {"trials": 2}, "optimizer": {"name": "random"},
                            "objective": {"type": "finetune"}, "model": {"name": name},
                            "data": sections["data"], "eval": sections["eval"], "train": {"output_dir": out}},
                           default_name="t")
    t0 = time.time()  # the model's part of the preflight (the tasks are built afresh each time)
    try:
        model_lib.check_hub_model(cfg.objective.model, name, None)
    except ObjectiveSetupError:
        pass
    seconds = time.time() - t0
    try:
        return "\n".join(cfg.kind.preflight(cfg.objective, cfg.space)), seconds
    except ObjectiveSetupError as e:
        return f"error: {e}", seconds


report["missing"] = preflight("acme/not-cached")
report["cached"] = preflight("acme/tiny-cached")
print("REPORT " + json.dumps(report))
"""


def _fake_hub_cache(root, tiny_llama):
    """The Hugging Face cache's layout for model acme/tiny-cached (its config only)."""
    snapshot = root / "models--acme--tiny-cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_llama / "config.json", snapshot / "config.json")
    (root / "models--acme--tiny-cached" / "refs").mkdir()
    (root / "models--acme--tiny-cached" / "refs" / "main").write_text("0" * 40)


@pytest.fixture(scope="module")
def offline_run(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    _fake_hub_cache(tmp / "hub", tiny_llama)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                            "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp / "hub"), TQDM_DISABLE="0")  # bars on: the warning came through one
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_llama), str(tmp / "out"), HUB_ID],
                       capture_output=True, text=True, env=env, timeout=300)
    report = [line for line in p.stdout.splitlines() if line.startswith("REPORT ")]
    assert p.returncode == 0 and report, p.stderr[-3000:]
    return json.loads(report[0][len("REPORT "):]), p.stderr


@pytest.mark.slow  # a fine-tuning trial in a fresh offline process
def test_a_local_study_trial_saves_and_scores_without_a_network_call(offline_run):
    report, stderr = offline_run
    assert report["trial_attempts"] == []
    assert 0 <= report["value"] <= 1
    adapter = json.loads(open(os.path.join(report["adapter_dir"], "adapter_config.json")).read())
    assert adapter["base_model_name_or_path"] == HUB_ID
    assert "Unable to fetch remote file" not in stderr and "Could not find a config file" not in stderr


@pytest.mark.slow  # a fine-tuning trial in a fresh offline process
def test_a_hub_model_without_network_fails_in_seconds_naming_the_fix(offline_run):
    report, _ = offline_run
    message, seconds = report["missing"]
    assert message.startswith("error: cannot load model 'acme/not-cached': no network")
    assert "not in the local Hugging Face cache" in message and "set [model] name to a local folder" in message
    assert "\n" not in message
    assert seconds < 5  # huggingface_hub's own retries take about 25 s


@pytest.mark.slow  # a fine-tuning trial in a fresh offline process
def test_a_cached_hub_model_is_found_without_network(offline_run):
    report, _ = offline_run
    lines, seconds = report["cached"]
    assert "model: acme/tiny-cached -> acme/tiny-cached (Hugging Face cache; no network)" in lines
    assert seconds < 5
