"""Faults touch only their own trial: a worker killed mid-trial (rerun), a trial that exits
its process or crashes (one FAIL), sys.exit (one FAIL), a trial past its timeout (FAIL with
the reason); the study goes on and spends its budget exactly."""

import json
import textwrap

import optuna
import pytest

from llmhpo.config import load_config
from llmhpo.runner import run

OBJECTIVE = textwrap.dedent('''
    import ctypes, json, os, signal, sys, time
    from pathlib import Path

    HERE = Path(__file__).parent

    def _once(name):
        """True for the one call that claims the flag file ``name`` (rename is atomic)."""
        try:
            os.rename(HERE / name, HERE / (name + ".taken"))
            return True
        except FileNotFoundError:
            return False

    def objective(x, y):
        time.sleep(0.3)
        with open(HERE / "calls.jsonl", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "x": x, "y": y}) + "\\n")
        if _once("kill.flag"):
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        if _once("exit.flag"):
            os._exit(3)
        if _once("sysexit.flag"):
            sys.exit(3)
        if _once("segv.flag"):
            ctypes.string_at(0)
        if _once("hang.flag"):
            time.sleep(60)
        return (x - 0.3) ** 2 + (y - 0.6) ** 2
''')

TOML = """
[study]
name = "faults"
storage = "sqlite:///faults.db"
[budget]
trials = {trials}
[runner]
workers = 2
{runner}
[optimizer]
name = "random"
[objective]
type = "python"
target = "faulty.py:objective"
[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
y = {{ type = "float", low = 0.0, high = 1.0 }}
"""


def make(tmp_path, flag=None, trials=6, runner=""):
    (tmp_path / "faulty.py").write_text(OBJECTIVE)
    if flag:
        (tmp_path / flag).write_text("")
    p = tmp_path / "faults.toml"
    p.write_text(TOML.format(trials=trials, runner=runner))
    return p


def trials(tmp_path):
    return optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path / 'faults.db'}").trials


def calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


@pytest.mark.slow  # many timed trials in worker processes (8-12 s)
def test_sixteen_one_second_trials_on_four_local_workers(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("""
[study]
name = "s"
storage = "sqlite:///s.db"
[budget]
trials = 16
[runner]
workers = 4
[optimizer]
name = "random"
[objective]
type = "sleep"
seconds = 1.0
""")
    s = run(load_config(p), progress=False)
    ts = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials
    assert s.complete == 16 and [t.state.name for t in ts] == ["COMPLETE"] * 16
    starts = [t.user_attrs["worker"]["start"] for t in ts]
    ends = [t.user_attrs["worker"]["end"] for t in ts]
    assert max(ends) - min(starts) < 6  # ideal 4 s; one at a time would be 16 s
    assert len({t.user_attrs["worker"]["pid"] for t in ts}) == 4


def test_worker_killed_mid_trial_reruns_that_trial_alone(tmp_path, capsys):
    s = run(load_config(make(tmp_path, "kill.flag")), progress=False)
    ts = trials(tmp_path)
    assert s.complete == 6 and s.failed == 0 and s.stopped == "budget"
    assert [t.state.name for t in ts] == ["COMPLETE"] * 6  # the other running trial was not touched
    retried = [t for t in ts if t.user_attrs.get("retries")]
    assert len(retried) == 1 and "SIGKILL" in retried[0].user_attrs["retry_1_reason"]
    c = calls(tmp_path)
    assert len(c) == 7  # six trials, one of them twice (on a fresh worker process)
    again = [e for e in c if (e["x"], e["y"]) == (retried[0].params["x"], retried[0].params["y"])]
    assert len(again) == 2 and again[0]["pid"] != again[1]["pid"]
    assert "running it again (retry 1 of 1)" in capsys.readouterr().out


def test_retries_are_bounded(tmp_path):
    """max_retries = 0: a lost worker fails its trial at once, with the reason."""
    s = run(load_config(make(tmp_path, "kill.flag", runner="max_retries = 0")), progress=False)
    ts = trials(tmp_path)
    failed = [t for t in ts if t.state.name == "FAIL"]
    assert s.complete == 5 and len(failed) == 1
    assert "was killed (SIGKILL" in failed[0].user_attrs["error"]


@pytest.mark.parametrize("flag,reason", [
    ("exit.flag", "the objective ended its worker process (exit code 3)"),
    ("sysexit.flag", "the objective called sys.exit(3)"),
    ("segv.flag", "crashed (SIGSEGV)"),
])
def test_a_trial_that_ends_its_process_is_one_failed_trial(tmp_path, flag, reason):
    s = run(load_config(make(tmp_path, flag)), progress=False)
    ts = trials(tmp_path)
    failed = [t for t in ts if t.state.name == "FAIL"]
    assert s.stopped == "budget" and s.complete == 5 and len(failed) == 1
    assert reason in failed[0].user_attrs["error"]
    assert not failed[0].user_attrs.get("retries")  # it would end the same way again: not rerun
    assert len(calls(tmp_path)) == 6


def test_trial_timeout_stops_the_trial_and_records_why(tmp_path):
    s = run(load_config(make(tmp_path, "hang.flag", runner='trial_timeout = "2s"')), progress=False)
    ts = trials(tmp_path)
    failed = [t for t in ts if t.state.name == "FAIL"]
    assert s.stopped == "budget" and s.complete == 5 and len(failed) == 1
    assert failed[0].user_attrs["error"] == "timeout after 2 s ([runner] trial_timeout)"
    assert s.seconds < 20  # the hung trial (60 s) was stopped


def test_one_worker_with_a_timeout_runs_in_a_process(tmp_path):
    """A single worker is the driver's own process unless something needs a process to stop."""
    p = make(tmp_path, "hang.flag", trials=2, runner="trial_timeout = 1.5")
    p.write_text(p.read_text().replace("workers = 2", "workers = 1"))
    s = run(load_config(p), progress=False)
    assert s.complete == 1 and s.failed == 1


@pytest.mark.slow  # many timed trials in worker processes (8-12 s)
def test_results_are_recorded_while_the_optimiser_computes(tmp_path):
    """BO asks in a thread of its own: a trial's end is written the moment its worker
    returns, not after the next ask (which costs BO a good part of a second here)."""
    p = tmp_path / "bo.toml"
    p.write_text("""
[study]
name = "bo"
storage = "sqlite:///bo.db"
[budget]
trials = 14
[runner]
workers = 4
[optimizer]
name = "bo"
n_init = 4
[objective]
type = "sleep"
seconds = 0.4
function = "hartmann6"
""")
    s = run(load_config(p), progress=False)
    assert s.complete == 14
    ts = optuna.load_study(study_name="bo", storage=f"sqlite:///{tmp_path / 'bo.db'}").trials
    delays = [t.datetime_complete.timestamp() - t.user_attrs["worker"]["end"] for t in ts]
    assert max(delays) < 0.5, delays  # an ask here costs seconds: recording after it would show


def test_workers_see_the_drivers_environment_of_the_moment(tmp_path, monkeypatch):
    """Workers are forked from a fork server started by the first run of this process; each
    still gets the driver's environment as it is when the worker starts, as a spawned one would."""
    (tmp_path / "envy.py").write_text("import os\n\nAT_IMPORT = float(os.environ['LLMHPO_TEST_ENV'])\n\n"
                                      "def objective(x):\n    return AT_IMPORT + float(os.environ['LLMHPO_TEST_ENV'])\n")
    values = []
    for i, value in enumerate(("1.5", "2.5")):
        monkeypatch.setenv("LLMHPO_TEST_ENV", value)
        p = tmp_path / f"env{i}.toml"
        p.write_text(TOML.replace("faults", f"env{i}").format(trials=2, runner="")
                     .replace("faulty.py", "envy.py").replace("y = {", "# y = {"))
        s = run(load_config(p), progress=False, quiet=True)
        values.append(s.best_value)
    assert values == [3.0, 5.0]  # read when the objective's module is imported, and when it runs


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_end_when_the_driver_is_killed(tmp_path):
    """SIGKILL to the driver alone (not its process group): its workers, mid-trial, end too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slow.py").write_text(textwrap.dedent('''
        import os, time
        from pathlib import Path

        def objective(x):
            (Path(__file__).parent / f"worker-{os.getpid()}").write_text("")
            time.sleep(60)
            return x
    '''))
    (tmp_path / "slow.toml").write_text(TOML.replace("faults", "slow").format(trials=4, runner="")
                                        .replace("faulty.py", "slow.py").replace("y = {", "# y = {"))
    p = subprocess.Popen([sys.executable, "-m", "llmhpo.cli", "run", "slow.toml", "--no-progress"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        pids = [int(f.name.split("-")[1]) for f in tmp_path.glob("worker-*")]
        assert len(pids) == 2 and all(_alive(q) for q in pids)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.time() + 15
        while any(_alive(q) for q in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(q) for q in pids), "workers outlived their driver"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
