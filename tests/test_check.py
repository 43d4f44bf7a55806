"""`llmhpo check` (and `run`, before its first trial) reports every problem at once: the
storage, looked at read-only, the model, data, tasks and GPUs; [runner] devices takes only
what CUDA_VISIBLE_DEVICES accepts."""

import importlib.util
import os
import subprocess
import sys

import pytest

from llmhpo.config import Config
from llmhpo.errors import ConfigError, SetupProblems, StudyError
from llmhpo.preflight import check_storage

FUNCTION = """
[study]
name = "s"
storage = "{storage}"
[budget]
trials = 2
[optimizer]
name = "random"
[objective]
type = "function"
name = "branin"
"""


def llmhpo(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "llmhpo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def errors(stderr: str) -> list[str]:
    return [line[len("error: "):] for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow  # loads lm-eval's tasks and the model through the CLI (~30 s)
def test_check_lists_every_missing_thing_at_once(tmp_path):
    (tmp_path / "s.toml").write_text("""
[study]
name = "s"
storage = "sqlite:///no/such/folder/s.db"
[budget]
trials = 2
[optimizer]
name = "random"
[objective]
type = "finetune"
[model]
name = "/nowhere/model"
[data]
dataset = "missing.jsonl"
[eval]
tasks = ["llmhpo_nope"]
objective = "llmhpo_nope/acc"
[runner]
devices = [0]
""")
    r = llmhpo("check", "s.toml", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "ready" not in r.stdout
    found = errors(r.stderr)
    assert len(found) == 5, r.stderr
    assert found[0].startswith("the folder of storage") and "no/such/folder/s.db does not exist" in found[0]
    assert found[1] == "[model] name = '/nowhere/model': no such folder or file"
    assert found[2].startswith("[data] dataset = ") and found[2].endswith("missing.jsonl': no such file")
    assert found[3].startswith("[eval] task 'llmhpo_nope' is not known to lm-eval")
    assert found[4] == ("[runner] devices lists GPU 0 but this machine has no CUDA GPU (torch sees none); "
                        "remove devices to run on the CPU")
    assert not (tmp_path / "no").exists()


def test_run_reports_every_problem_before_the_first_trial_too(tmp_path):
    from llmhpo.runner import run

    cfg = Config.from_dict({"study": {"storage": "sqlite:///no/such/s.db"}, "budget": {"trials": 2},
                            "optimizer": {"name": "random"}, "objective": {"type": "python", "target": "gone.py:f"},
                            "space": {"x": {"type": "float", "low": 0, "high": 1}}}, base_dir=tmp_path)
    with pytest.raises(SetupProblems) as e:
        run(cfg, quiet=True)
    assert len(e.value.problems) == 2
    assert "the folder of storage" in e.value.problems[0] and "no such file" in e.value.problems[1]
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("storage, message", [
    ("postgres://nowhere", "[study] storage = 'postgres://nowhere' is not a storage URL llmhpo knows; use sqlite:///"),
    ("sqlite:///no/such/folder/x.db", "the folder of storage"),
])
def test_check_fails_on_a_storage_that_run_cannot_open(tmp_path, storage, message):
    (tmp_path / "s.toml").write_text(FUNCTION.format(storage=storage))
    r = llmhpo("check", "s.toml", cwd=tmp_path)
    assert r.returncode == 2 and "ready" not in r.stdout
    assert len(errors(r.stderr)) == 1 and message in errors(r.stderr)[0]


def test_check_creates_no_storage(tmp_path):
    (tmp_path / "s.toml").write_text(FUNCTION.format(storage="sqlite:///s.db"))
    r = llmhpo("check", "s.toml", cwd=tmp_path)
    assert r.returncode == 0 and "ready" in r.stdout and "new SQLite file" in r.stdout
    assert sorted(os.listdir(tmp_path)) == ["s.toml"]


def test_storage_problems_name_the_fix(tmp_path):
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(StudyError, match="is not a SQLite database; choose another"):
        check_storage(f"sqlite:///{tmp_path}/notes.db")
    with pytest.raises(StudyError, match="the folder of storage .* does not exist"):
        check_storage(f"journal:///{tmp_path}/gone/s.log")
    with pytest.raises(StudyError, match="is not a storage URL llmhpo knows"):
        check_storage("postgress://u@h/db")
    assert "in memory" in check_storage(None)
    assert "new journal file" in check_storage(f"journal:///{tmp_path}/s.log")
    assert os.listdir(tmp_path) == ["notes.db"]


@pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None, reason="the MySQL driver is installed")
def test_a_missing_database_driver_names_the_package():
    with pytest.raises(StudyError, match="needs the database driver 'MySQLdb', which is not installed; "
                                         "pip install mysqlclient"):
        check_storage("mysql://u@localhost/db")


def _runner(devices):
    return Config.from_dict({"budget": {"trials": 2}, "optimizer": {"name": "random"},
                             "objective": {"type": "function", "name": "branin"},
                             "runner": {"devices": devices}}).runner


@pytest.mark.parametrize("bad", ["cuda:0", -1, True, 1.0, "GPU-xyz", "0,1", ""])
def test_devices_take_only_what_cuda_visible_devices_accepts(bad):
    with pytest.raises(ConfigError) as e:
        _runner([bad])
    assert str(e.value) == (f"[runner] devices has {bad!r}, which CUDA_VISIBLE_DEVICES does not accept; give GPU "
                            "indices (0, 1, ...), GPU-<uuid> or MIG-<uuid> as `nvidia-smi -L` shows them")


def test_devices_accept_indices_and_uuids():
    good = [0, "1", "GPU-8f0c6d2e-1b9a-4c3e-9f1a-2b3c4d5e6f70", "MIG-5c1f0e3a-77aa-5d1e-b1c2-0123456789ab",
            "MIG-GPU-8f0c6d2e-1b9a-4c3e-9f1a-2b3c4d5e6f70/1/0"]
    assert _runner(good).devices == ("0", "1", *good[2:])


def test_devices_against_the_gpus_this_machine_has(monkeypatch):
    import torch

    from llmhpo.objectives.finetune import kind

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert kind.check_devices(("0",))[1] == ["[runner] devices lists GPU 0 but this machine has no CUDA GPU "
                                              "(torch sees none); remove devices to run on the CPU"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert kind.check_devices(("0", "1"))[1] == []
    assert kind.check_devices(("1", "3"))[1] == ["[runner] devices lists GPU 3 but this machine has 2 CUDA GPU(s), "
                                                 "ids 0..1; use ids in 0..1 or remove devices"]
    monkeypatch.setattr(kind, "_gpu_uuids", lambda: None)  # no nvidia-smi: CUDA judges the UUID in the worker
    assert kind.check_devices(("GPU-abc",))[1] == []
    monkeypatch.setattr(kind, "_gpu_uuids", lambda: ["GPU-abc1", "GPU-def2"])
    assert kind.check_devices(("GPU-abc", "GPU-999"))[1] == [
        "[runner] devices lists GPU-999 but `nvidia-smi -L` does not show it on this machine (it shows GPU-abc1, "
        "GPU-def2); use one of those or a GPU id 0..1"]


MEMORY = """
[study]
name = "s"
[budget]
trials = 2
[optimizer]
name = "random"
[objective]
type = "finetune"
[space]
lora_rank = {{ type = "int", low = 2, high = 64 }}
learning_rate = {{ type = "float", low = 1e-5, high = 1e-3, log = true }}
[train]
batch_size = {batch}
max_seq_len = {length}
[data]
max_examples = 50
[eval]
tasks = ["llmhpo_add"]
objective = "llmhpo_add/acc"
"""


@pytest.mark.slow  # loads the model, the data and lm-eval's tasks through the CLI twice (~50 s)
def test_check_estimates_memory_against_the_gpu_memory_given(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    (tmp_path / "small.toml").write_text(MEMORY.format(batch=8, length=128))
    r = llmhpo("check", "small.toml", "--gpu-memory", "24", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "ready" in r.stdout, r.stderr
    assert "memory: the most demanding configuration (r 64, batch 8, 128 tokens) needs about " in r.stdout
    assert "memory: a GPU of 24.0 GiB: fits (" in r.stdout
    (tmp_path / "big.toml").write_text(MEMORY.format(batch=64, length=4096))
    r = llmhpo("check", "big.toml", "--gpu-memory", "24", "--gpu-memory", "80", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "ready" not in r.stdout
    found = errors(r.stderr)
    assert len(found) == 2 and all(e.startswith("memory: the most demanding configuration (r 64, batch 64, 4096 "
                                                "tokens) needs about ") for e in found), r.stderr
    assert ("a GPU of 24.0 GiB does not fit it: set [train] batch_size = 4 with grad_accum x 16 (the same "
            "effective batch) (about ") in found[0]
    assert "a GPU of 80.0 GiB does not fit it" in found[1]


def test_gpu_memory_must_be_positive(tmp_path):
    (tmp_path / "s.toml").write_text(FUNCTION.format(storage="sqlite:///s.db"))
    r = llmhpo("check", "s.toml", "--gpu-memory", "0", cwd=tmp_path)
    assert r.returncode == 2 and errors(r.stderr) == ["--gpu-memory 0 must be a GPU's memory in GiB, e.g. --gpu-memory 24"]


def test_memory_against_the_gpus_cuda_reports(monkeypatch):
    import types

    import torch

    from llmhpo.preflight import check_memory

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gpus = [types.SimpleNamespace(name="NVIDIA A10", total_memory=24 * 2**30, uuid="1"),
            types.SimpleNamespace(name="NVIDIA A10", total_memory=24 * 2**30, uuid="2"),
            types.SimpleNamespace(name="NVIDIA H100", total_memory=80 * 2**30, uuid="3")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: gpus[i])
    cfg = Config.from_dict({"budget": {"trials": 2}, "optimizer": {"name": "random"},
                            "objective": {"type": "finetune"}, "runner": {"devices": [0, 1, 2]},
                            "model": {"name": "meta-llama/Llama-3.2-1B"},
                            "train": {"batch_size": 32, "max_seq_len": 512}, "space": {"preset": "paper"}})
    lines, problems = check_memory(cfg)
    assert lines[1].startswith("memory: GPU 2 (NVIDIA H100, 80.0 GiB): fits (")
    assert len(problems) == 1 and "; GPUs 0, 1 (NVIDIA A10, 24.0 GiB) do not fit it: " in problems[0]
    assert check_memory(cfg, (80,))[1] == []  # --gpu-memory replaces the GPUs found


def test_check_and_run_say_when_the_optimiser_ignores_the_priors(tmp_path, capsys):
    """A prior on a variable of an SOO study: check and the run's start say SOO does not use
    it (and say nothing of the kind for bo)."""
    body = """[study]\nname = "p"\n[objective]\ntype = "function"\nname = "branin"\n[budget]\ntrials = 5
[space.x0]\ntype = "float"\nlow = -5\nhigh = 10\nprior = { mode = 2, spread = 1 }
[space.x1]\ntype = "float"\nlow = 0\nhigh = 15\n[optimizer]\nname = "%s"\n"""
    for opt, said in (("soo", True), ("bo", False)):
        (tmp_path / f"{opt}.toml").write_text(body % opt)
        r = llmhpo("check", f"{opt}.toml", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert ("priors: soo does not use them" in r.stdout) is said, r.stdout
    from llmhpo.config import load_config
    from llmhpo.runner import run

    run(load_config(tmp_path / "soo.toml"), quiet=False)
    assert "priors: soo does not use them" in capsys.readouterr().out


def test_check_compares_a_stored_study_without_touching_a_database_that_has_no_tables_yet(tmp_path):
    import sqlite3

    import tomllib

    from llmhpo.preflight import preflight
    from llmhpo.runner import run
    from llmhpo.study import stored_difference

    raw = tomllib.loads(FUNCTION.format(storage="sqlite:///empty.db"))
    empty = tmp_path / "empty.db"
    con = sqlite3.connect(empty)  # a SQLite file without Optuna's tables: the run makes them
    con.execute("create table t(x)")
    con.execute("drop table t")
    con.commit()
    con.close()
    before = empty.read_bytes()
    cfg = Config.from_dict(raw, base_dir=tmp_path)
    assert stored_difference(cfg) is None and preflight(cfg, stored=True)
    assert empty.read_bytes() == before
    run(cfg, progress=False, quiet=True)
    assert stored_difference(cfg) is None  # the same configuration
    other = Config.from_dict({**raw, "optimizer": {"name": "sobol"}}, base_dir=tmp_path)
    assert "exists with a different configuration (changed: optimizer.name)" in stored_difference(other)
    with pytest.raises(StudyError, match="run with --overwrite to replace it"):
        preflight(other, stored=True)
    assert any("--overwrite replaces it" in line for line in preflight(other, overwrite=True, stored=True))


def test_check_overwrite_needs_every_earlier_study_as_run_overwrite_does(tmp_path):
    import tomllib

    from llmhpo.preflight import preflight
    from llmhpo.runner import run

    earlier = Config.from_dict(tomllib.loads(FUNCTION.format(storage="sqlite:///a.db")), base_dir=tmp_path)
    run(earlier, progress=False, quiet=True)
    raw = tomllib.loads(FUNCTION.format(storage="sqlite:///s.db").replace('name = "s"', 'name = "new"'))
    cfg = Config.from_dict({**raw, "warm_start": {"from": [{"storage": "a.db", "study": "s"}], "use": "design"}},
                           base_dir=tmp_path)
    run(cfg, progress=False, quiet=True)
    (tmp_path / "a.db").unlink()
    assert any("gone since the study began" in line for line in preflight(cfg, stored=True))  # a resume goes on
    with pytest.raises(ConfigError, match="a.db does not exist"):  # a study started again needs it
        preflight(cfg, overwrite=True, stored=True)
