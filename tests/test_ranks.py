"""Workers share the machine: CPU workers split the cores, GPU workers take one device, a
share of one, or a group of k (a rank group that trains one trial over k processes);
``llmhpo status`` shows which GPUs each running trial holds."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from llmhpo._tables import device_groups
from llmhpo.config import Config
from llmhpo.errors import ConfigError
from llmhpo.executors import InlineExecutor, ProcessExecutor, RayExecutor
from llmhpo.executors import ranks
from llmhpo.executors.ranks import split_threads
from llmhpo.objectives import Result

BASE = {"study": {"name": "g"}, "budget": {"trials": 2}, "objective": {"type": "sleep", "seconds": 0},
        "optimizer": {"name": "random"}}


def runner(**rn):
    return Config.from_dict({**BASE, "runner": rn}).runner


class Threads:
    """Reports the CPU threads its worker computes on."""

    def __call__(self, params):
        import torch

        return Result(0.0, {"threads": torch.get_num_threads(), "env": os.environ.get("LLMHPO_THREADS")})


def test_devices_group_k_per_worker_or_n_workers_per_device():
    four = ("0", "1", "2", "3")
    assert device_groups(four, 0) == device_groups(four, 1) == [("0",), ("1",), ("2",), ("3",)]
    assert device_groups(four, 2) == [("0", "1"), ("2", "3")]
    assert device_groups(four, 4) == [four]
    assert device_groups(("0", "1"), 0.5) == [("0",), ("1",), ("0",), ("1",)]  # alternating: spread first
    assert device_groups(("0",), 0.25) == [("0",)] * 4
    with pytest.raises(ConfigError, match=r"gpus_per_trial = 2 does not divide the 3 devices listed"):
        device_groups(("0", "1", "2"), 2)
    with pytest.raises(ConfigError, match=r"gpus_per_trial = 0.3 must be 1/n"):
        device_groups(four, 0.3)
    with pytest.raises(ConfigError, match=r"gpus_per_trial = 1.5 must be a whole number"):
        device_groups(four, 1.5)


def test_runner_sizes_the_pool_from_the_device_groups():
    r = runner(devices=[0, 1, 2, 3], gpus_per_trial=2)
    assert (r.workers, r.gpus_per_trial) == (2, 2.0)
    assert runner(devices=[0, 1, 2, 3], gpus_per_trial=2, workers="auto").workers == 2
    assert runner(devices=[0, 1], gpus_per_trial=0.5).workers == 4
    assert runner(executor="ray", gpus_per_trial=0.5).gpus_per_trial == 0.5  # a Ray fraction is accepted
    back = Config.from_dict({**BASE, "runner": r.to_dict()}).runner
    assert back == r
    with pytest.raises(ConfigError, match=r"workers = 3 but 4 devices are listed at gpus_per_trial = 2; use 2 workers"):
        runner(devices=[0, 1, 2, 3], gpus_per_trial=2, workers=3)
    with pytest.raises(ConfigError, match=r"gpus_per_trial with the process executor groups \[runner\] devices"):
        runner(gpus_per_trial=2)
    with pytest.raises(ConfigError, match=r"gpus_per_trial = 1.5 must be a whole number"):
        runner(executor="ray", gpus_per_trial=1.5)


def test_ray_fits_fractional_gpus():
    fit = RayExecutor._fit
    assert fit(SimpleNamespace(_gpus=0.5, _cpus=1.0), {"GPU": 2, "CPU": 16}) == 4
    assert fit(SimpleNamespace(_gpus=2.0, _cpus=1.0), {"GPU": 4, "CPU": 16}) == 2
    with pytest.raises(ConfigError, match="cannot fit one trial"):
        fit(SimpleNamespace(_gpus=2.0, _cpus=1.0), {"GPU": 1, "CPU": 16})


def test_cpu_workers_split_the_cores(monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LLMHPO_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert split_threads(2, cores=8) == 4 and split_threads(3, cores=8) == 2 and split_threads(4, cores=2) == 1
    # a limit the environment sets caps the share, never raises it; a malformed one is ignored
    for limit, want in (("1", 1), ("3", 3), ("16", 4), ("0", 4), ("four", 4)):
        monkeypatch.setenv("OMP_NUM_THREADS", limit)
        assert split_threads(2, cores=8) == want, limit
    monkeypatch.delenv("OMP_NUM_THREADS")
    # the split is the driver's: as if on 2 cores, where each worker would take both by default
    monkeypatch.setattr(ranks, "usable_cores", lambda: 2)
    ex = ProcessExecutor(Threads, 2)
    try:
        ex.submit("a", {})
        out = []
        while not out:
            out = ex.wait(timeout=60)
        assert out[0].error is None and out[0].metrics == {"threads": 1, "env": "1"}
    finally:
        ex.close()
    import torch

    before = torch.get_num_threads()
    inline = InlineExecutor(Threads)
    inline.submit("a", {})
    assert inline.wait()[0].metrics["threads"] == before  # the driver's own process keeps its threads


def test_status_shows_the_gpus_of_each_running_trial():
    from rich.console import Console

    from llmhpo.cli._reading import _workers_table

    now = time.time()
    table = _workers_table([{"host": "node1", "device": "0,1", "trial": 7, "since": now - 30},
                            {"host": "node1", "device": "2,3", "trial": None}], now)
    console = Console(width=100, record=True)
    console.print(table)
    text = console.export_text()
    assert "GPUs" in text
    busy = next(line for line in text.splitlines() if "0,1" in line)
    assert "7" in busy and "30 s" in busy
    assert "idle" in next(line for line in text.splitlines() if "2,3" in line)


class AllReduce:
    """Sums params["x"] over the ranks of its group (rank 0 answers, followers follow). A
    follower, once each, mid-trial, when it can claim the file that params names: raises
    (params["crash"]) or is killed (params["kill"])."""

    def __call__(self, params):
        import torch.distributed as dist

        return Result(self._sum(params), {"world": dist.get_world_size(), "pid": os.getpid()})

    def follow(self, params, fidelity=None):
        for what in ("crash", "kill"):
            flag = params.get(what)
            if flag and os.path.exists(flag):
                os.rename(flag, flag + ".taken")
                if what == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
                raise RuntimeError("a follower's crash")
        self._sum(params)

    @staticmethod
    def _sum(params):
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(params["x"])])
        dist.all_reduce(t)
        return t.item()


def run_jobs(ex, jobs, fidelities=None):
    """Each job's Outcome; ``fidelities``: key -> Fidelity for the multi-fidelity ones."""
    got = {}
    try:
        for key, params in jobs.items():
            ex.submit(key, params, (fidelities or {}).get(key))
        while len(got) < len(jobs):
            for out in ex.wait(timeout=120):
                got[out.key] = out
    finally:
        ex.close()
    return got


@pytest.mark.slow  # a rank group started (6 s on 2 idle cores)
def test_a_rank_group_runs_each_job_on_every_rank():
    """gpus_per_trial = 2 without devices: a group of two CPU processes (gloo)."""
    got = run_jobs(ProcessExecutor(AllReduce, 1, gpus_per_trial=2), {i: {"x": i + 1} for i in range(3)})
    assert {k: o.value for k, o in got.items()} == {0: 2.0, 1: 4.0, 2: 6.0}
    assert {o.metrics["world"] for o in got.values()} == {2}
    assert len({o.metrics["pid"] for o in got.values()}) == 1  # the group stays up between jobs


@pytest.mark.slow  # three rank groups started (30 s on 2 busy cores)
def test_a_follower_killed_mid_trial_reruns_it_and_one_that_raises_fails_it(tmp_path):
    for name in ("kill", "crash"):
        (tmp_path / name).touch()
    ex = ProcessExecutor(AllReduce, 1, gpus_per_trial=2)
    got = run_jobs(ex, {"killed": {"x": 3, "kill": str(tmp_path / "kill")},
                        "raised": {"x": 1, "crash": str(tmp_path / "crash")}, "after": {"x": 2}})
    assert got["killed"].value == 6.0 and got["killed"].retries == 1
    assert "a follower rank of the worker's rank group" in ex.retries[0].reason
    assert got["raised"].value is None and got["raised"].retries == 0
    assert "rank 1: RuntimeError: a follower's crash" in got["raised"].error
    assert got["after"].value == 4.0  # a fresh group takes the next job


@pytest.mark.slow  # two fine-tuning trials of the tiny model, one over a CPU rank group (~30 s)
def test_a_rank_group_trains_as_one_process_does(tiny_llama, tmp_path):
    """Two ranks, each on half of every micro-batch, follow the loss curve of one process at
    the same effective batch (no dropout: nothing random differs between the two), also over
    two rungs of a multi-fidelity run (the followers go on from rank 0's checkpoint)."""
    import functools

    from llmhpo.objectives import Fidelity
    from llmhpo.objectives.finetune import FinetuneObjective
    from llmhpo.objectives.finetune.config import FinetuneConfig
    from llmhpo.objectives.finetune.kind import objective_for

    spec = FinetuneConfig.from_sections({
        "model": {"name": str(tiny_llama)},
        "data": {"dataset": "builtin:add", "max_examples": 64, "val_examples": 8},
        "train": {"max_steps": 6, "batch_size": 4, "max_seq_len": 64, "output_dir": str(tmp_path),
                  "save_adapters": False},
        "eval": {"tasks": ["llmhpo_add"], "objective": "llmhpo_add/acc", "limit": 4, "n_questions": 20},
    }, "ranks")
    params = {"learning_rate": 1e-2, "lora_rank": 4, "lora_alpha": 16, "lora_dropout": 0.0, "weight_decay": 0.0}
    one = FinetuneObjective(spec.resolved())(params)
    rungs = {"r1": Fidelity("max_steps", 3, 6, str(tmp_path / "rungs")),
             "r2": Fidelity("max_steps", 6, 6, str(tmp_path / "rungs"))}
    got = run_jobs(ProcessExecutor(functools.partial(objective_for, spec), 1, gpus_per_trial=2),
                   {"t": params, "r1": params, "r2": params}, rungs)
    two = got["t"]
    assert two.error is None and two.metrics["ranks"] == 2 and one.metrics["ranks"] == 1
    assert two.metrics["threads"] == split_threads(2)  # each rank a CPU process of its own
    assert two.metrics["train_loss_curve"] == pytest.approx(one.metrics["train_loss_curve"], rel=1e-4)
    assert two.metrics["train_tokens"] == one.metrics["train_tokens"]
    assert two.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], rel=1e-4)
    assert got["r1"].error is None and got["r2"].metrics["steps_trained_now"] == 3
    assert got["r2"].metrics["train_loss_curve"] == pytest.approx(one.metrics["train_loss_curve"], rel=1e-4)


def test_the_finetune_objective_takes_the_executors_threads_unless_train_threads_says(tiny_llama, monkeypatch):
    import torch

    from llmhpo.objectives.finetune import FinetuneObjective
    from llmhpo.objectives.finetune.config import FinetuneConfig

    def threads_after_setup(**train):
        spec = FinetuneConfig.from_sections({"model": {"name": str(tiny_llama)}, "data": {"dataset": "builtin:add"},
                                             "train": train, "eval": {"tasks": ["llmhpo_add"]}}, "th")
        obj = FinetuneObjective(spec.resolved())
        obj.follower = True  # no task index: only the threads matter here
        obj.setup()
        return torch.get_num_threads()

    before = torch.get_num_threads()
    monkeypatch.setenv("LLMHPO_THREADS", "3")
    try:
        assert threads_after_setup() == 3
        assert threads_after_setup(threads=2) == 2  # [train] threads overrides the executor's share
    finally:
        torch.set_num_threads(before)


class FailsOnRankZero(AllReduce):
    """Rank 0 fails before the collective its followers wait in (params["fail"])."""

    def __call__(self, params):
        if params.get("fail"):
            raise ValueError("rank 0 fails first")
        return super().__call__(params)


@pytest.mark.slow  # two rank groups started in this process (10-20 s)
def test_followers_stuck_after_rank_zero_failed_are_replaced(monkeypatch):
    from llmhpo.executors.base import WorkerObjective

    monkeypatch.setattr(ranks, "_ACK_TIMEOUT", 2.0)
    group = ranks.RankGroup(FailsOnRankZero, [None, None], 1)
    objective = WorkerObjective(FailsOnRankZero)
    try:
        out, healthy = group.run(objective, "a", {"x": 1, "fail": True}, None)
        assert "rank 0 fails first" in out.error and not healthy
        group.close()
        out, healthy = group.run(objective, "b", {"x": 2}, None)  # a fresh group
        assert out.value == 4.0 and healthy
    finally:
        group.close()
