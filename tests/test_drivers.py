"""One driver per study: a second one is refused (or waits), under races; a study killed
while being created resumes; files that are not a study are refused; `status` tells a live
driver from a dead one."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from llmhpo.config import load_config
from llmhpo.errors import StudyError
from llmhpo.runner import run

TOML = """
[study]
name = "race"
storage = "sqlite:///race.db"
[budget]
trials = {trials}
[runner]
workers = 2
[optimizer]
name = "random"
[objective]
type = "sleep"
seconds = {seconds}
"""

CMD = [sys.executable, "-m", "llmhpo.cli", "run", "race.toml", "--no-progress"]


def write(tmp_path, trials=6, seconds=0.2):
    (tmp_path / "race.toml").write_text(TOML.format(trials=trials, seconds=seconds))


def start(tmp_path, *extra):
    return subprocess.Popen(CMD + list(extra), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def states(tmp_path):
    st = optuna.load_study(study_name="race", storage=f"sqlite:///{tmp_path / 'race.db'}")
    return st.trials


def running_trials(db) -> int:
    """The number of RUNNING trials, read with sqlite3 alone (the file appears whole: see storage._create_sqlite)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)  # not mode=ro: a read-only WAL reader in this process
        # can leave the file's shared memory mapped read-only for the connections that follow
        try:
            return con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def check_exact(tmp_path, budget):
    ts = states(tmp_path)
    complete = [t for t in ts if t.state.name == "COMPLETE"]
    assert len(complete) == budget, [t.state.name for t in ts]
    assert len({t.user_attrs["candidate_id"] for t in complete}) == budget
    assert len({tuple(t.user_attrs["x"]) for t in complete}) == budget  # no point evaluated twice


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_two_drivers_started_together(tmp_path):
    """20 times: both start at once; one runs the study, the other is refused with a line
    naming it (or, if it came late, finds the study done): the budget exactly, no traceback."""
    for rep in range(20):
        d = tmp_path / f"rep{rep}"  # a fresh folder each time (deleting a SQLite file this process
        d.mkdir()                    # has read can hand its stale pages to the next one)
        write(d, trials=4, seconds=0.1)
        a, b = start(d), start(d)
        outs = [p.communicate(timeout=120) + (p.returncode,) for p in (a, b)]
        codes = sorted(rc for _, _, rc in outs)
        assert codes in ([0, 2], [0, 0]), (rep, outs)
        for out, errs, rc in outs:
            assert "Traceback" not in errs, (rep, errs)
            if rc == 2:
                assert "is being run by another driver (pid" in errs and "on host" in errs, errs
        check_exact(d, 4)


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_second_driver_while_the_first_runs(tmp_path):
    """20 times: the second driver comes while the first has trials running; it is refused and
    the first finishes untouched."""
    for rep in range(20):
        d = tmp_path / f"rep{rep}"
        d.mkdir()
        write(d, trials=4, seconds=0.2)
        a = start(d)
        deadline = time.time() + 60
        while running_trials(d / "race.db") == 0 and time.time() < deadline:
            time.sleep(0.05)
        b = subprocess.run(CMD, cwd=d, capture_output=True, text=True, timeout=120)
        out_a, err_a = a.communicate(timeout=120)
        assert a.returncode == 0 and "Traceback" not in err_a, (rep, err_a)
        # normally refused; a rare late start finds the study finished and does nothing
        assert b.returncode in (0, 2) and "Traceback" not in b.stderr, (rep, b.stderr)
        if b.returncode == 2:
            assert f"pid {a.pid}" in b.stderr
        check_exact(d, 4)


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_wait_queues_behind_the_running_driver(tmp_path):
    write(tmp_path, trials=4, seconds=1.0)  # long enough that the second is up before the first ends
    a = start(tmp_path)
    deadline = time.time() + 60
    while running_trials(tmp_path / "race.db") == 0 and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "race.toml").write_text(TOML.format(trials=8, seconds=1.0))  # the queued job asks for more
    b = subprocess.run(CMD + ["--wait"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    a.communicate(timeout=60)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert "waiting: study 'race' is being run by another driver" in b.stderr
    check_exact(tmp_path, 8)


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_kill_right_after_creation_leaves_a_resumable_study(tmp_path):
    """SIGKILL at moments across the study's creation: the next run always resumes it."""
    for delay in [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6]:
        d = tmp_path / f"delay{delay}"
        d.mkdir()
        write(d, trials=3, seconds=0.1)
        p = start(d)
        deadline = time.time() + 30
        while not (d / "race.db").exists() and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        r = subprocess.run(CMD, cwd=d, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (delay, r.stderr)
        check_exact(d, 3)
        st = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "race.toml"], cwd=d,
                            capture_output=True, text=True, timeout=60)
        assert st.returncode == 0 and "3 complete" in st.stdout, (delay, st.stdout, st.stderr)


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_status_tells_a_dead_driver_and_the_next_one_takes_over(tmp_path):
    write(tmp_path, trials=4, seconds=1.5)
    p = start(tmp_path)
    deadline = time.time() + 60
    while running_trials(tmp_path / "race.db") < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    live = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "race.toml", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    info = json.loads(live.stdout)
    assert info["driver"]["alive"] and info["driver"]["pid"] == p.pid
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    dead = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "race.toml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert "driver: gone" in dead.stdout and "RUNNING (driver gone)" in dead.stdout, dead.stdout
    # the dead driver ran on this host: its lease is taken over at once, not after the timeout
    s = run(load_config(tmp_path / "race.toml"), progress=False)
    assert s.stopped == "budget"
    check_exact(tmp_path, 4)


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_live_workers_in_status_json(tmp_path):
    write(tmp_path, trials=4, seconds=3.0)
    p = start(tmp_path)
    deadline = time.time() + 60
    info = None
    while time.time() < deadline:  # the workers are published with the next heartbeat (5 s)
        time.sleep(0.5)
        r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "race.toml", "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            info = json.loads(r.stdout)
            if [w for w in info["workers"] if w.get("trial") is not None]:
                break
    p.communicate(timeout=60)
    busy = [w for w in info["workers"] if w.get("trial") is not None]
    assert busy and all(w["host"] and w["pid"] and w["since"] for w in busy), info["workers"]


@pytest.mark.parametrize("content,message", [
    (b"", "is an empty file (0 bytes), not a study database"),
    (b"hello, not a database at all", "is not a SQLite database"),
])
def test_files_that_are_not_a_study_are_refused(tmp_path, content, message):
    write(tmp_path)
    (tmp_path / "race.db").write_bytes(content)
    with pytest.raises(StudyError, match=re.escape(message)):
        run(load_config(tmp_path / "race.toml"), progress=False)
    assert (tmp_path / "race.db").read_bytes() == content  # untouched


def test_another_programs_database_is_refused_untouched(tmp_path):
    write(tmp_path)
    con = sqlite3.connect(tmp_path / "race.db")
    con.execute("create table customers (id integer primary key, name text)")
    con.commit()
    con.close()
    with pytest.raises(StudyError, match="another program's database .*customers"):
        run(load_config(tmp_path / "race.toml"), progress=False)
    con = sqlite3.connect(tmp_path / "race.db")
    assert [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")] == ["customers"]


@pytest.mark.slow  # driver processes racing or killed: repeated CLI runs
def test_journal_storage_has_one_driver_too(tmp_path):
    """Optuna's journal file (shared disks without a database server): the lease is a file
    beside it, under flock."""
    (tmp_path / "race.toml").write_text(TOML.format(trials=4, seconds=0.4).replace(
        'storage = "sqlite:///race.db"', 'storage = "journal:///race.log"'))
    a = start(tmp_path)
    deadline = time.time() + 60
    while not (tmp_path / "race.log.driver").exists() and time.time() < deadline:
        time.sleep(0.05)
    b = subprocess.run(CMD, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    a.communicate(timeout=120)
    assert a.returncode == 0
    assert b.returncode in (0, 2) and "Traceback" not in b.stderr
    if b.returncode == 2:
        assert f"pid {a.pid}" in b.stderr
    from llmhpo.study import Study

    st = Study.load(f"journal:///{tmp_path / 'race.log'}", "race")
    assert st.counts()["COMPLETE"] == 4
