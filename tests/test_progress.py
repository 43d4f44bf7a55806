"""What a run shows while it runs: each trial's phases (from ``llmhpo.objectives.progress``)
through the process and inline executors, a finished study's rerun, a worker whose driver
died, the line before Ray starts, and ``llmhpo bench``'s progress."""

import io
import os
import subprocess
import sys

import pytest

from llmhpo._progress import Throttled, progress, reporting
from llmhpo.config import load_config
from llmhpo.live import JobProgress
from llmhpo.runner import run

PHASES = '''
from llmhpo.objectives import progress


def train(lr):
    progress("loading")
    for k in range(17):
        progress("training", k, 16, "steps")
    for k in range(81):
        progress("scoring", k, 80, "requests")
    return {"score": lr}
'''

TOML = '''
[study]
name = "phases"
[budget]
trials = {trials}
[runner]
workers = {workers}
executor = "{executor}"
[optimizer]
name = "random"
[objective]
type = "python"
target = "{target}:train"
metric = "score"
[space.lr]
type = "float"
low = 0.0
high = 1.0
'''


def write(tmp_path, trials=3, workers=2, executor="process", extra="", budget=None, target="phases.py"):
    (tmp_path / "phases.py").write_text(PHASES)
    path = tmp_path / "phases.toml"
    text = TOML.format(trials=trials, workers=workers, executor=executor, target=target) + extra
    path.write_text(text if budget is None else text.replace(f"trials = {trials}", budget))
    return load_config(path)


@pytest.mark.parametrize("executor,workers", [("process", 2), ("inline", 1)])
def test_each_trial_logs_one_line_per_phase_not_per_step(tmp_path, capsys, executor, workers):
    s = run(write(tmp_path, workers=workers, executor=executor), progress=False)
    assert s.complete == 3
    out = capsys.readouterr().out
    for n in range(3):
        assert f"trial {n}: loading" in out
        assert f"trial {n}: training 16 steps" in out
        assert f"trial {n}: scoring 80 requests" in out
    assert out.count(": training") == 3 and out.count(": scoring") == 3


def test_progress_is_a_no_op_outside_a_job_and_names_bad_input():
    progress("training", 1, 2, "steps")  # no sink: nothing happens
    with pytest.raises(TypeError, match="phase must be a non-empty text"):
        progress(None)
    with pytest.raises(TypeError, match="done must be a number"):
        progress("training", "3")


def test_throttle_keeps_every_phase_and_end_but_drops_most_steps():
    seen = []
    send = Throttled(lambda *r: seen.append(r), every=60)
    for k in range(1001):
        send("training", k, 1000, "steps")
    send("scoring", 0, 5, "requests")
    assert seen == [("training", 0, 1000, "steps"), ("training", 1000, 1000, "steps"), ("scoring", 0, 5, "requests")]
    with reporting(lambda *r: seen.append(r)):
        progress("saving")
    progress("saving again")  # the sink is gone with the block
    assert seen[-1] == ("saving", None, None, "")


def test_the_bar_shows_a_row_per_running_trial_until_it_ends():
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(file=io.StringIO()))
    jobs = JobProgress(print, bar)
    jobs.started("key-a", 3)
    jobs.report("key-a", "training", 5, 16, "steps")
    jobs.report("other", "scoring", 2, None, "requests")  # a job the run did not name: its key
    rows = {t.description: t for t in bar.tasks}
    assert rows["  trial 3 training"].completed == 5 and rows["  trial 3 training"].total == 16
    assert rows["  trial 3 training"].fields["count"] == "5/16 steps"
    assert "  job other scoring" in rows
    jobs.report("key-a", "scoring", 0, 80, "requests")  # a new phase replaces the row
    assert [t.description for t in bar.tasks] == ["  job other scoring", "  trial 3 scoring"]
    jobs.finished(3)
    assert [t.description for t in bar.tasks] == ["  job other scoring"]


def test_rerunning_a_finished_study_says_so_and_starts_no_worker(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, trials=2)
    run(cfg, progress=False)
    capsys.readouterr()

    def no_executor(*a, **k):
        raise AssertionError("a worker was started for a finished study")

    monkeypatch.setattr("llmhpo.runner.start.make_executor", no_executor)
    s = run(cfg, progress=False)
    out = capsys.readouterr().out
    assert "study 'phases' has met its budget (2 of 2 trials); raise [budget] trials (or pass --trials N) " \
           "to run more" in out
    assert s.stopped == "budget" and s.complete == 2 and s.best_value is not None


def test_rerunning_a_finished_multi_fidelity_study_says_so(tmp_path, capsys, monkeypatch):
    # three configurations at the first rung (1 step each) spend it all: no job fits any more
    fidelity = '[fidelity]\nmin = 1\nmax = 9\nscheduler = "asha"\n'
    (tmp_path / "curve.py").write_text(PHASES.replace("def train(lr):", "def train(lr, fidelity):"))
    cfg = write(tmp_path, workers=1, executor="inline", extra=fidelity, budget="resource = 3", target="curve.py")
    first = run(cfg, progress=False)
    assert first.stopped == "budget" and first.resource_spent == 3
    capsys.readouterr()
    monkeypatch.setattr("llmhpo.runner.start.make_executor", lambda *a, **k: pytest.fail("a worker was started"))
    again = run(cfg, progress=False)
    assert "study 'phases' has met its budget (3 of 3 steps); raise [budget] resource to run more" \
        in capsys.readouterr().out
    assert again.resource_spent == 3


def test_a_study_with_budget_left_still_runs(tmp_path, capsys):
    cfg = write(tmp_path, trials=2, workers=1, executor="inline")
    run(cfg, progress=False)
    from dataclasses import replace

    s = run(replace(cfg, budget=replace(cfg.budget, trials=3)), progress=False)
    assert s.complete == 3 and "met its budget" not in capsys.readouterr().out


def test_ray_start_is_announced_before_the_wait(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, executor="ray", workers=1)

    def slow_ray(*a, **k):
        print("EXECUTOR", flush=True)
        raise KeyboardInterrupt

    monkeypatch.setattr("llmhpo.runner.start.make_executor", slow_ray)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False, preflight=False)
    out = capsys.readouterr().out
    assert out.index("starting a local Ray cluster...") < out.index("EXECUTOR")


WORKER = '''
import multiprocessing as mp, sys, time
from llmhpo.executors import _process_main
from llmhpo.objectives import Result, progress


def objective(params):
    time.sleep(0.5)  # the driver is gone by now
    progress("training", 1, 2, "steps")
    return Result(1.0)


def factory():
    return objective


if __name__ == "__main__":
    # not fork: a forked worker would hold a copy of the driver's end, which then never closes
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_process_main, args=(child, factory, None))
    p.start()
    child.close()
    parent.send((1, {"x": 0.5}, None))
    parent.close()  # the driver's end goes, as when the driver dies
    p.join(30)
    print("EXIT", p.exitcode)
'''


def test_a_worker_whose_driver_died_ends_without_a_traceback(tmp_path):
    (tmp_path / "w.py").write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "w.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert "EXIT 0" in r.stdout, r.stderr
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_bench_without_a_terminal_prints_a_line_per_run(tmp_path):
    from typer.testing import CliRunner

    from llmhpo.cli import app

    r = CliRunner().invoke(app, ["bench", "--optimizers", "random", "--functions", "branin", "--budget", "5",
                                 "--seeds", "2"])
    assert r.exit_code == 0, r.output
    assert "run 1/2: random on branin, seed" in r.output and "run 2/2: random on branin" in r.output
