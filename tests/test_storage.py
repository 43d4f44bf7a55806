"""The study's storage under contention: every write (Optuna's and the driver lease's) waits
out a busy database, within a bounded time; a storage that stays locked stops the study with
one line, and the same command resumes it; a storage opened twice in one process leaves the
other processes' view of it whole."""

import collections
import os
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from llmhpo.errors import StudyError
from llmhpo.lease import Lease
from llmhpo.study import open_storage


def hold_write_lock(db, seconds: float, started: threading.Event | None = None) -> None:
    """What another program does to the file (a `sqlite3` shell, a backup, a dashboard, a
    second driver in a long transaction): it takes the write lock and keeps it ``seconds``."""
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        if started is not None:
            started.set()
        time.sleep(seconds)
        con.execute("COMMIT")
    finally:
        con.close()


def test_writes_wait_out_a_writer_that_holds_the_database(tmp_path):
    """The driver's two writers hammer one study file, the lease's heartbeat (through the
    storage's own engine) and what the main thread writes per trial, while another
    connection holds the write lock for 7 s: longer than the sqlite3 module's 5 s busy
    timeout, after which each waiting write failed (`StorageInternalError: An exception is
    raised during the commit`, `OperationalError: database is locked`). Every write must wait
    and land."""
    db = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{db}")
    sid = optuna.create_study(study_name="s", storage=storage)._study_id
    lease = Lease(storage, "s")
    lease.acquire()
    errors: list[BaseException] = []
    done: collections.Counter = collections.Counter()
    stop = threading.Event()

    def heartbeat():
        while not stop.is_set():
            try:
                assert lease.backend.update_mine("s", lease.token, {"heartbeat": time.time(), "workers": "[]"})
            except BaseException as e:
                errors.append(e)
                return
            done["beats"] += 1
            time.sleep(0.002)

    def trials():  # finish_trial, then save_optimizer_state, as the main thread does
        while not stop.is_set():
            try:
                tid = storage.create_new_trial(sid)
                storage.set_trial_user_attr(tid, "metrics", {"loss": 0.5, "acc": 0.9})
                storage.set_trial_user_attr(tid, "timings", {"trial": 1.0})
                storage.set_trial_state_values(tid, TrialState.COMPLETE, [0.5])
                storage.set_study_system_attr(sid, "llmhpo:optimizer_state", "x" * 4000)
            except BaseException as e:
                errors.append(e)
                return
            done["trials"] += 1

    threads = [threading.Thread(target=heartbeat)] + [threading.Thread(target=trials) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        hold_write_lock(db, 7.0)
        before = dict(done)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
        lease.release()
    assert not errors, f"{type(errors[0]).__name__}: {errors[0]} (cause: {errors[0].__cause__!r})"
    assert done["beats"] > before["beats"] and done["trials"] > before["trials"], (before, done)
    trials_ = storage.get_all_trials(sid, deepcopy=False)
    assert trials_ and all(t.state == TrialState.COMPLETE for t in trials_[:-2])


def test_reopening_a_storage_in_a_process_keeps_other_processes_in_sync(tmp_path):
    """A process that opens a SQLite storage again (a second run in a notebook, `Study.load`
    beside an open study) must keep its SQLite locks: reading the file's header with a plain
    open() and close() dropped every POSIX lock the process held on it, so the next process to
    close the file (`llmhpo status`) thought itself the last, checkpointed and deleted the WAL
    under the driver, whose later writes no other process saw."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    storage = open_storage(url)
    optuna.create_study(study_name="one", storage=storage)
    open_storage(url).get_all_studies()

    def studies_seen_by_another_process() -> int:
        code = ("import sqlite3, sys\ncon = sqlite3.connect(sys.argv[1])\n"
                "print(con.execute('select count(*) from studies').fetchone()[0])\ncon.close()")
        r = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    assert studies_seen_by_another_process() == 1
    assert (tmp_path / "s.db-wal").exists(), "another process deleted the WAL under an open storage"
    optuna.create_study(study_name="two", storage=storage)
    assert studies_seen_by_another_process() == 2


TOML = """
[study]
name = "locked"
storage = "sqlite:///locked.db"
[budget]
trials = 6
[runner]
workers = 2
[optimizer]
name = "random"
[objective]
type = "sleep"
seconds = 0.3
"""


def _running(db) -> int:
    if not db.exists():  # sqlite3 would create it
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_a_storage_locked_past_the_patience_stops_the_run_in_one_line_and_it_resumes(tmp_path):
    """Another connection takes the write lock while trials run and keeps it past the
    storage's patience (shortened to 3 s): the run ends with one line naming the storage, the
    cause and the fix, exit status 2, no traceback; once the lock is gone the same command
    finishes the study: the budget exactly, no configuration evaluated twice."""
    (tmp_path / "s.toml").write_text(TOML)
    db = tmp_path / "locked.db"
    cmd = [sys.executable, "-m", "llmhpo.cli", "run", "s.toml", "--no-progress"]
    env = {**os.environ, "LLMHPO_STORAGE_PATIENCE": "3"}
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while _running(db) == 0 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()
    release, taken = threading.Event(), threading.Event()

    def hold():
        con = sqlite3.connect(db, timeout=60, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(120)
            con.execute("COMMIT")
        finally:
            con.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(60)
        t0 = time.time()
        out, err = p.communicate(timeout=120)
        stopped_after = time.time() - t0
    finally:
        release.set()
        holder.join(60)
    assert p.returncode == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"error: storage sqlite:///{db} stayed locked for " in err and "s (database is locked)" in err, err
    assert "the study is resumable: run the same command again" in err, err
    assert stopped_after < 30, stopped_after  # the patience, then the way out: no second wait as long

    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    trials_ = optuna.load_study(study_name="locked", storage=f"sqlite:///{db}").trials
    complete = [t for t in trials_ if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [t.state.name for t in trials_]
    assert len({t.user_attrs["candidate_id"] for t in complete}) == 6
    assert len({tuple(t.user_attrs["x"]) for t in complete}) == 6


# ---------------------------------------------------------------- the retrying wrapper
def _busy_error() -> Exception:
    """What Optuna's RDB storage raises on a locked SQLite file."""
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. ") from e
    except optuna.exceptions.StorageInternalError as e:
        return e


class _Flaky(optuna.storages.InMemoryStorage):
    """A storage whose set_study_user_attr fails ``fails`` times with ``error`` first."""

    def __init__(self, fails: int, error: Exception):
        super().__init__()
        self.fails, self.error, self.calls = fails, error, 0

    def set_study_user_attr(self, study_id, key, value):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error
        return super().set_study_user_attr(study_id, key, value)


def _patient(inner):
    from llmhpo.storage import PatientStorage

    storage = PatientStorage(inner, "sqlite:///x.db")
    return storage, storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")


def test_a_busy_call_is_made_again_until_it_lands():
    inner = _Flaky(3, _busy_error())
    storage, sid = _patient(inner)
    storage.set_study_user_attr(sid, "k", 1)
    assert inner.calls == 4 and storage.get_study_user_attrs(sid) == {"k": 1}
    st = optuna.load_study(study_name="s", storage=storage)  # Optuna takes it as any storage
    assert st.user_attrs == {"k": 1}


def test_other_errors_are_not_retried():
    error = optuna.exceptions.StorageInternalError("An exception is raised during the commit. ")
    error.__cause__ = ValueError("value too long for type character varying(2048)")
    inner = _Flaky(1, error)
    storage, sid = _patient(inner)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.set_study_user_attr(sid, "k", 1)
    assert inner.calls == 1


def test_a_storage_that_stays_locked_gives_up_once_in_one_line(monkeypatch):
    from llmhpo.storage import StorageBusy

    monkeypatch.setenv("LLMHPO_STORAGE_PATIENCE", "0.5")
    inner = _Flaky(10**9, _busy_error())
    storage, sid = _patient(inner)
    t0 = time.time()
    with pytest.raises(StorageBusy) as info:
        storage.set_study_user_attr(sid, "k", 1)
    assert 0.2 < time.time() - t0 < 3
    assert isinstance(info.value, StudyError)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("storage sqlite:///x.db stayed locked for 0 s (database is locked)")
    assert msg.endswith("the study is resumable: run the same command again")
    calls = inner.calls
    with pytest.raises(StorageBusy):  # the study is stopping: the next calls try once each
        storage.set_study_user_attr(sid, "k", 1)
    assert inner.calls == calls + 1
    inner.fails = 0  # unlocked: patient again
    storage.set_study_user_attr(sid, "k", 2)
    assert storage.get_study_user_attrs(sid) == {"k": 2}


def test_sqlite_write_transactions_begin_immediate(tmp_path):
    """Every write transaction takes the write lock as it begins (BEGIN IMMEDIATE), so it
    queues on the busy timeout instead of failing on a snapshot another connection made stale."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    con = storage._backend.engine.raw_connection()
    try:
        assert con.driver_connection.isolation_level == "IMMEDIATE"
    finally:
        con.close()


def test_status_of_a_storage_with_several_studies_lists_each_in_one_row(tmp_path):
    import json

    import optuna
    from typer.testing import CliRunner

    import llmhpo
    from llmhpo.cli import app

    def two(x, y):
        return {"a": (x - 0.3) ** 2 + y, "b": (x + 0.3) ** 2 - y}

    url = f"sqlite:///{tmp_path}/several.db"
    space = [llmhpo.Float("x", -1, 1), llmhpo.Float("y", -1, 1)]
    llmhpo.optimize(lambda x, y: two(x, y)["a"], space, trials=4, optimizer="random", storage=url,
                    study_name="one-objective", quiet=True)
    llmhpo.optimize(two, space, trials=5, optimizer="random", metrics=["a", "b"], directions=["minimize", "minimize"],
                    storage=url, study_name="two-objectives", quiet=True)
    optuna.create_study(study_name="foreign", storage=url)  # an Optuna study llmhpo did not make
    r = CliRunner().invoke(app, ["status", url])
    assert r.exit_code == 0, r.output
    rows = _table_rows(r.output)
    assert rows["one-objective"][2] == "4 complete" and "(trial" in rows["one-objective"][3]
    assert rows["two-objectives"][2] == "5 complete" and "on the Pareto set" in rows["two-objectives"][3]
    assert "was not made by llmhpo" in rows["foreign"][2]
    assert "llmhpo status " + url + " --study NAME" in r.output
    r = CliRunner().invoke(app, ["status", url, "--json"])
    got = {s["study"]: s for s in json.loads(r.output)["studies"]}
    assert got["one-objective"]["counts"]["COMPLETE"] == 4 and got["one-objective"]["best_trial"] is not None
    assert got["two-objectives"]["pareto_trials"] and "error" in got["foreign"]
    r = CliRunner().invoke(app, ["best", url])  # one study is needed there: the names and the fix
    assert r.exit_code != 0 and "holds several studies (one-objective, two-objectives, foreign); pass --study NAME" \
        in r.output


def _table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell: each column's text, its folded lines joined."""
    rows: dict[str, list[list[str]]] = {}
    current = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[0]:
            current = cells[0]
            rows[current] = [[c] for c in cells]
        elif current is not None:
            for column, c in zip(rows[current], cells):
                column.append(c)
    return {k: [" ".join(p for p in column if p) for column in v] for k, v in rows.items()}
