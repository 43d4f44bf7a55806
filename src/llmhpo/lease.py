"""One driver per study: a lease in the study's own storage, renewed by a heartbeat.

A study has one optimiser state, so one driver (``llmhpo run``) drives it at a time; more
GPUs come from more workers (processes, or Ray actors on many nodes), not more drivers.
A second driver is refused with a line naming the running one (host, pid, since). A
driver that died (killed, its node lost) is taken over at once when it ran on this host
(its pid is gone), else ``STALE_AFTER`` seconds after its last heartbeat.

The lease row also carries the study's live state for ``llmhpo status``: the heartbeat,
and each worker's host, device, trial and start time.

Backends: a table ``llmhpo_drivers`` in an RDB storage (SQLite, PostgreSQL, MySQL; its
conditional UPDATE is the atomic compare-and-set; each statement waits out a busy database
as the storage's own calls do, ``storage.retrying``), a ``.driver`` file beside a journal
file (an ``fcntl`` lock guards it), nothing for in-memory studies.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from llmhpo.errors import StudyError
from llmhpo.storage import StorageBusy, patience, retrying

HEARTBEAT_EVERY = 5.0  # seconds
STALE_AFTER = 30.0  # a lease not renewed for this long belongs to a dead driver
RELEASE_PATIENCE = 5.0  # seconds the release at the end waits out a busy database


class DriverBusy(StudyError):
    """Another live driver holds the study."""


def _row_alive(row: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether the driver of ``row`` is alive (as far as this machine can tell)."""
    if row is None or not row.get("token"):
        return False
    now = time.time() if now is None else now
    if now - float(row.get("heartbeat") or 0) > STALE_AFTER:
        return False
    if row.get("host") == socket.gethostname() and row.get("pid"):
        try:
            os.kill(int(row["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def busy(name: str, row: dict[str, Any]) -> DriverBusy:
    return DriverBusy(f"study '{name}' is being run by another driver ({describe(row)}); wait for it to "
                      "finish (`llmhpo status` follows it; `llmhpo run --wait` queues behind it), or stop it first")


def describe(row: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(row.get("started") or 0)))
    beat = now - float(row.get("heartbeat") or 0)
    return f"pid {row.get('pid')} on host {row.get('host')}, since {since}, last heartbeat {beat:.0f} s ago"


# ---------------------------------------------------------------- backends
class _SqlBackend:
    TABLE = "llmhpo_drivers"

    def __init__(self, engine: Any, where: str):
        import sqlalchemy as sa

        self.sa, self.engine, self.where = sa, engine, where
        meta = sa.MetaData()
        self.table = sa.Table(
            self.TABLE, meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("token", sa.String(64), nullable=True),
            sa.Column("host", sa.String(255)),
            sa.Column("pid", sa.Integer),
            sa.Column("started", sa.Float),
            sa.Column("heartbeat", sa.Float),
            sa.Column("workers", sa.Text),
        )
        for attempt in range(5):  # two drivers creating the table at once: one wins, the other retries
            try:
                meta.create_all(engine, checkfirst=True)
                break
            except sa.exc.OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _write(self, statement: Any, patience_s: float | None = None) -> int:
        """Run one statement in its own transaction, waiting out a busy database; its rowcount."""
        def go() -> int:
            with self.engine.begin() as c:
                return c.execute(statement).rowcount
        return retrying(go, self.where, patience_s)

    def read(self, name: str) -> dict[str, Any] | None:
        t = self.table

        def go():
            with self.engine.connect() as c:
                return c.execute(self.sa.select(t).where(t.c.study_name == name)).mappings().first()
        row = retrying(go, self.where)
        return None if row is None else dict(row)

    def insert(self, row: dict[str, Any]) -> bool:
        try:
            self._write(self.table.insert().values(**row))
            return True
        except self.sa.exc.IntegrityError:
            return False

    def replace(self, name: str, old_token: str | None, row: dict[str, Any]) -> bool:
        """Compare-and-set: take the row only if its token is still the one read (each
        holder writes a new token, so two drivers cannot both take it)."""
        t = self.table
        cond = t.c.study_name == name
        cond &= (t.c.token.is_(None) if old_token is None else t.c.token == old_token)
        return self._write(t.update().where(cond).values(**row)) == 1

    def update_mine(self, name: str, token: str, values: dict[str, Any], patience_s: float | None = None) -> bool:
        t = self.table
        return self._write(t.update().where((t.c.study_name == name) & (t.c.token == token)).values(**values),
                           patience_s) == 1


class _FileBackend:
    """A JSON file of rows beside a journal file; every change under an exclusive flock."""

    def __init__(self, path: Path):
        self.path = Path(str(path) + ".driver")
        self.lock = Path(str(path) + ".driver.lock")

    def _locked(self, fn: Callable[[dict], Any]) -> Any:
        import fcntl

        with open(self.lock, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                rows = json.loads(self.path.read_text()) if self.path.exists() else {}
                before = json.dumps(rows, sort_keys=True)
                result = fn(rows)
                if json.dumps(rows, sort_keys=True) != before:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(rows))
                    os.replace(tmp, self.path)
                return result
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self, name: str) -> dict[str, Any] | None:
        return self._locked(lambda rows: rows.get(name))

    def insert(self, row: dict[str, Any]) -> bool:
        def go(rows):
            if row["study_name"] in rows:
                return False
            rows[row["study_name"]] = row
            return True
        return self._locked(go)

    def replace(self, name: str, old_token: str | None, row: dict[str, Any]) -> bool:
        def go(rows):
            cur = rows.get(name)
            if cur is None or cur.get("token") != old_token:
                return False
            rows[name] = {**cur, **row}
            return True
        return self._locked(go)

    def update_mine(self, name: str, token: str, values: dict[str, Any], patience_s: float | None = None) -> bool:
        def go(rows):
            cur = rows.get(name)
            if cur is None or cur.get("token") != token:
                return False
            cur.update(values)
            return True
        return self._locked(go)


def backend_for(storage: Any) -> Any:
    """The lease backend of an Optuna storage; None for in-memory storage."""
    inner = getattr(storage, "_backend", storage)
    engine = getattr(inner, "engine", None)
    if engine is not None:
        where = getattr(storage, "where", None) or engine.url.render_as_string(hide_password=True)
        return _SqlBackend(engine, where)
    for journal in (inner, getattr(inner, "_backend", None)):  # JournalStorage -> JournalFileBackend
        path = getattr(journal, "_file_path", None)
        if path is not None:
            return _FileBackend(Path(path))
    return None


def read(storage: Any, name: str) -> dict[str, Any] | None:
    """The study's lease row (for status), or None. Never creates the table on a read-only look."""
    inner = getattr(storage, "_backend", storage)
    engine = getattr(inner, "engine", None)
    if engine is not None:
        import sqlalchemy as sa

        where = getattr(storage, "where", None) or engine.url.render_as_string(hide_password=True)
        if not retrying(lambda: sa.inspect(engine).has_table(_SqlBackend.TABLE), where):
            return None
    b = backend_for(storage)
    if b is None:
        return None
    row = b.read(name)
    if row is not None and isinstance(row.get("workers"), str):
        try:
            row["workers"] = json.loads(row["workers"])
        except ValueError:
            row["workers"] = []
    return row


def alive(row: dict[str, Any] | None) -> bool:
    return _row_alive(row)


# ---------------------------------------------------------------- the lease
class Lease:
    """This driver's hold on a study. ``acquire`` returns the previous row (None when no
    llmhpo driver ever held this study name here). A heartbeat thread renews it; if another
    driver took it over (this one was thought dead), ``lost`` is set and the run stops."""

    def __init__(self, storage: Any, name: str):
        self.name = name
        self.backend = backend_for(storage)
        self.token = uuid.uuid4().hex
        self.lost = threading.Event()
        self.workers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> dict[str, Any] | None:
        if self.backend is None:
            return None
        now = time.time()
        mine = {"study_name": self.name, "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                "started": now, "heartbeat": now, "workers": "[]"}
        for _ in range(50):
            row = self.backend.read(self.name)
            if row is None:
                if self.backend.insert(mine):
                    return None
                continue  # another driver inserted first: look again
            if _row_alive(row):
                raise busy(self.name, row)
            if self.backend.replace(self.name, row.get("token"), mine):
                return row
        raise StudyError(f"could not take the driver lease of study '{self.name}' (too much contention)")

    def start_heartbeat(self) -> None:
        if self.backend is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="llmhpo-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:  # a beat waits out a busy database until the next one is due, which tries again
                self.beat(patience_s=HEARTBEAT_EVERY)
            except StorageBusy:
                pass

    def publish(self, workers: list[dict[str, Any]]) -> None:
        """The driver's workers now; written at once when a trial started or ended on one."""
        changed = [(w.get("pid"), w.get("trial")) for w in workers] != \
            [(w.get("pid"), w.get("trial")) for w in self.workers]
        self.workers = workers
        if changed:
            self.beat()

    def beat(self, patience_s: float | None = None) -> None:
        """Renew the lease now, with the current workers. A busy database is waited out (for
        ``patience_s``, default the storage's patience), then ``StorageBusy``."""
        if self.backend is None or self.lost.is_set():
            return
        try:
            ok = self.backend.update_mine(self.name, self.token, {"heartbeat": time.time(),
                                                                  "workers": json.dumps(self.workers, default=str)},
                                          patience_s=patience_s)
        except StorageBusy:
            raise
        except Exception:  # e.g. a database server that went away for a moment: the next beat tries again
            return
        if not ok:
            self.lost.set()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.backend is not None and not self.lost.is_set():
            try:  # not for long: a row left behind is taken over (at once on this host: its pid is gone)
                self.backend.update_mine(self.name, self.token, {"token": None, "heartbeat": time.time(),
                                                                 "workers": "[]"}, patience_s=min(RELEASE_PATIENCE, patience()))
            except Exception:
                pass
