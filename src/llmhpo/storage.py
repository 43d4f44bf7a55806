"""Optuna storages as llmhpo opens them: SQLite files made whole and tuned, and every call
patient with a busy database.

A study's storage is written by several hands at once: the driver's main thread (trials,
optimiser state), its lease heartbeat thread (``lease.py``, through the same engine), and
other programs on the same file (a second driver of another study, `llmhpo status`,
optuna-dashboard, a `sqlite3` shell, a backup). SQLite lets one writer in at a time; the
others wait up to the connection's busy timeout (the sqlite3 module's default: 5 s) and then
fail with "database is locked", which Optuna reports as ``StorageInternalError: An exception
is raised during the commit``. Some busy states are not waited on at all: a transaction that
read first and tries to write after another connection committed fails at once
(SQLITE_BUSY_SNAPSHOT in WAL mode), and server databases end deadlocked or timed-out lock
waits the same way. A failed transaction is rolled back whole, so the call can be made again.

So every call to a storage that ``open_storage`` returns, and every write of the lease,
goes through ``retrying``: a busy or locked database is waited out with bounded,
jittered backoff for up to ``patience()`` seconds (60 by default; the environment variable
``LLMHPO_STORAGE_PATIENCE`` changes it). SQLite connections also take the write lock when
their transaction begins (``BEGIN IMMEDIATE``), so a writer queues on the busy timeout
instead of failing on a stale snapshot. A storage still locked after that raises
``StorageBusy``: one line saying what held it and that the study resumes with the same
command.
"""

from __future__ import annotations

import abc
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import optuna
from optuna.storages import BaseStorage

from llmhpo.errors import StudyError

T = TypeVar("T")

PATIENCE = 60.0  # seconds a storage call waits out a busy database, all its attempts together
_FIRST_DELAY, _MAX_DELAY = 0.05, 2.0  # backoff between attempts (jittered)

#: how a busy or locked database reads in the errors of SQLite, PostgreSQL and MySQL
_BUSY_WORDS = ("database is locked", "database table is locked", "database schema is locked", "sqlite_busy",
               "deadlock", "lock wait timeout", "lock timeout", "could not serialize access",
               "could not obtain lock", "lock not available")


class StorageBusy(StudyError):
    """The study's storage stayed busy or locked for longer than ``patience()``."""


def patience() -> float:
    """Seconds a storage call waits out a busy database (``LLMHPO_STORAGE_PATIENCE``)."""
    raw = os.environ.get("LLMHPO_STORAGE_PATIENCE")
    if raw:
        try:
            return max(0.1, float(raw))
        except ValueError:
            pass
    return PATIENCE


def busy_timeout() -> float:
    """SQLite's own wait for the lock within one attempt: a part of the patience, so that
    attempts that cannot wait (a stale snapshot) are retried within it too."""
    return min(5.0, max(0.05, patience() / 4))


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return out


def is_busy(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) says the database was busy or locked: worth a retry."""
    for x in _chain(e):
        if isinstance(x, StorageBusy):  # already waited out
            return False
        if isinstance(x, sqlite3.Error) and (getattr(x, "sqlite_errorcode", 0) or 0) & 0xFF in (5, 6):
            return True  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
        text = str(x).lower()
        if any(w in text for w in _BUSY_WORDS):
            return True
    return False


def _cause(e: BaseException) -> str:
    """The database's own words, e.g. 'database is locked'."""
    last = _chain(e)[-1]
    text = (str(last).strip().splitlines() or [type(last).__name__])[0]
    if text.startswith("(") and ") " in text:  # SQLAlchemy's "(sqlite3.OperationalError) ..."
        text = text.split(") ", 1)[1]
    return text[:200]


def shown(url: str) -> str:
    """A storage URL as messages show it: without a password."""
    if "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def busy_error(where: str, seconds: float, e: BaseException) -> StorageBusy:
    return StorageBusy(
        f"storage {where} stayed locked for {seconds:.0f} s ({_cause(e)}): another program or connection "
        "kept its write lock (a long transaction, a `sqlite3` shell, a backup); the study is resumable: "
        "run the same command again")


def retrying(call: Callable[[], T], where: str, patience_s: float | None = None) -> T:
    """``call()``, made again while it fails on a busy or locked database, with backoff, for up
    to ``patience_s`` seconds (default ``patience()``); then ``StorageBusy``. Other errors pass
    at once. Safe for writes: a transaction that failed was rolled back whole."""
    limit = patience() if patience_s is None else patience_s
    t0 = time.monotonic()
    delay = _FIRST_DELAY
    while True:
        try:
            return call()
        except Exception as e:
            if not is_busy(e):
                raise
            waited = time.monotonic() - t0
            if waited + delay > limit:
                raise busy_error(where, waited, e) from e
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_DELAY)


class PatientStorage(BaseStorage):
    """An Optuna storage whose every call waits out a busy database (``retrying``). Anything
    else (the engine, ``_backend``) is the wrapped storage's. After one call gave up, the
    next ones try once each, so that a study stopping on a locked storage stops at once."""

    def __init__(self, inner: BaseStorage, where: str):
        self._inner, self.where = inner, where
        self._gave_up: float | None = None  # seconds the last call waited before giving up

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        fn = getattr(self._inner, name)
        stopping = self._gave_up is not None
        t0 = time.monotonic()
        try:
            out = retrying(lambda: fn(*args, **kwargs), self.where, 0.0 if stopping else None)
        except StorageBusy as e:
            if not stopping:
                self._gave_up = time.monotonic() - t0
                raise
            cause = e.__cause__ or e
            raise busy_error(self.where, self._gave_up, cause) from cause
        self._gave_up = None
        return out

    def __getattr__(self, name: str) -> Any:  # only for what the class does not define
        if name == "_inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"PatientStorage({self._inner!r})"


def _forward(name: str) -> Callable[..., Any]:
    def method(self: PatientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(BaseStorage, name).__doc__
    return method


for _name, _value in list(vars(BaseStorage).items()):  # Optuna's whole storage API
    if not _name.startswith("_") and callable(_value):
        setattr(PatientStorage, _name, _forward(_name))
abc.update_abstractmethods(PatientStorage)


# ---------------------------------------------------------------- SQLite files
#: how a storage URL's path is read, for the errors about one
PATHS_HINT = ("a path after sqlite:/// or journal:/// is relative to the TOML's folder; an absolute one takes "
              "four slashes, sqlite:////abs/study.db")


def file_path(url: str | None) -> Path | None:
    """The file of a sqlite:/// or journal:// storage URL (as ``storage_url`` wrote it); None
    for any other storage."""
    if url is None or url == "sqlite:///:memory:":
        return None
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            return Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest)
    return None


def check_sqlite_file(path: Path, key: str = "[study] storage") -> None:
    """Refuse a file that is not an Optuna SQLite storage before Optuna writes its tables
    into it: an empty file, another kind of file, another program's database; ``key``: the
    setting the errors name. (Only SQLite opens the file: a plain open() and close() of it
    would drop every POSIX lock this process holds on it, see ``open_storage``.)"""
    if not path.exists():
        return
    if path.is_dir():
        raise StudyError(f"storage path {path} is a folder; give a .db file, e.g. sqlite:///{path}/study.db")
    if path.stat().st_size == 0:
        raise StudyError(f"{path} is an empty file (0 bytes), not a study database; delete it, or choose "
                         f"another {key}")

    def tables() -> set[str]:
        # read-write: a hot journal left by a killed driver is rolled back (SQLite's own recovery)
        con = sqlite3.connect(path, timeout=busy_timeout())
        try:
            return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()

    try:
        found = retrying(tables, f"sqlite:///{path}")
    except sqlite3.DatabaseError as e:
        if (getattr(e, "sqlite_errorcode", 0) or 0) == 26 or "not a database" in str(e):  # SQLITE_NOTADB
            raise StudyError(f"{path} is not a SQLite database; choose another {key} path") from e
        raise StudyError(f"{path} cannot be read as a SQLite database ({e}); choose another {key}") from e
    if found and not {"studies", "trials"} <= found:
        listed = ", ".join(sorted(found)[:4])
        raise StudyError(f"{path} is another program's database (tables {listed}), not an Optuna study storage; "
                         f"choose another {key} path")


def _local_disk(path: Path) -> bool:
    """Whether ``path`` is on a local file system (SQLite's WAL mode needs one: not NFS,
    Lustre, GPFS or another shared disk)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    real = str(path.resolve().parent)
    best = max((m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    network = ("nfs", "nfs4", "cifs", "smb", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse", "9p", "glusterfs")
    return best is not None and not any(best[1].startswith(n) for n in network)


def _fast_sqlite(storage: BaseStorage, path: Path) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit costs microseconds instead of an
    fsync (~15 ms here), so recording a trial never keeps a worker waiting, and `status` reads
    while the driver writes. A killed process loses nothing; a power cut may lose the last
    commits, never the file's integrity. Only on local disks (see ``_local_disk``)."""
    import sqlalchemy as sa

    engine = getattr(storage, "_backend", storage).engine

    def pragmas(con, _record):
        con.execute("PRAGMA synchronous=NORMAL")

    sa.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened so far did not get the pragma
    try:
        con = sqlite3.connect(path, timeout=busy_timeout())
        try:
            con.execute("PRAGMA journal_mode=WAL")  # kept in the file
        finally:
            con.close()
    except sqlite3.Error:
        pass  # another process holds it: stays in its journal mode, still correct


def _create_sqlite(path: Path) -> None:
    """A new SQLite storage appears whole: Optuna's tables are made in a scratch file, copied
    (SQLite's backup API) into a second one that no connection of this process has open,
    and that one is linked to ``path`` (atomic; if another driver linked first, its file is
    kept). A kill at any moment leaves no file or a complete one, never an empty one. (The
    copy matters: SQLite shares a file's WAL index between the connections of a process by
    inode, so reopening the scratch file's inode under the new name would hide this
    process's writes from every other process, e.g. `llmhpo status`.)"""
    if not path.parent.is_dir():
        raise StudyError(f"the folder of storage {path} does not exist; create it or fix [study] storage "
                         f"({PATHS_HINT})")
    scratch = path.with_name(f".{path.name}.{os.getpid()}.scratch")
    final = path.with_name(f".{path.name}.{os.getpid()}.creating")
    try:
        def connect():  # no fsync per commit for Optuna's ~90 table-creating commits
            con = sqlite3.connect(scratch, timeout=10, check_same_thread=False)
            con.execute("PRAGMA synchronous=OFF")
            return con

        storage = optuna.storages.RDBStorage(f"sqlite:///{scratch}", engine_kwargs={"creator": connect})
        storage.scoped_session.remove()
        storage.engine.dispose()
        src, dst = sqlite3.connect(scratch), sqlite3.connect(final)
        try:
            src.backup(dst)
            if _local_disk(path):
                dst.execute("PRAGMA journal_mode=WAL")  # kept in the file (see _fast_sqlite)
            dst.commit()
        finally:
            src.close()
            dst.close()
        try:
            os.link(final, path)
        except FileExistsError:
            pass
    except StudyError:
        raise
    except Exception as e:
        raise StudyError(f"cannot create storage {path}: {e}") from e
    finally:
        for f in (scratch, final):
            f.unlink(missing_ok=True)
            for side in ("-wal", "-shm", "-journal"):
                Path(str(f) + side).unlink(missing_ok=True)


def _rdb(url: str, path: Path | None, read_only: bool = False) -> BaseStorage:
    """Optuna's RDB storage (behind its cache, as ``optuna.storages.get_storage`` makes it);
    a SQLite connection waits ``busy_timeout()`` for the lock and begins each write
    transaction with BEGIN IMMEDIATE (the sqlite3 module's implicit BEGIN, before the first
    write, made IMMEDIATE): the write lock is taken before anything is read, so no write
    fails on a snapshot another connection made stale. read_only: no table is created (an
    earlier study's file with another schema stays as it is)."""
    if not url.startswith("sqlite:"):
        if read_only:
            return optuna.storages.get_storage(optuna.storages.RDBStorage(url, skip_table_creation=True))
        return optuna.storages.get_storage(url)
    kwargs = {"connect_args": {"timeout": busy_timeout(), "isolation_level": "IMMEDIATE"}}
    storage = optuna.storages.get_storage(optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                                     skip_table_creation=read_only))
    if path is not None and not read_only and _local_disk(path):
        _fast_sqlite(storage, path)
    return storage


def has_optuna_tables(url: str) -> bool:
    """Whether the database at ``url`` has Optuna's tables, looked at without writing (opening
    it as an Optuna storage would stamp a fresh database)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
    except Exception:
        return False
    try:
        return sa.inspect(engine).has_table("studies")
    except Exception:
        return False
    finally:
        engine.dispose()


def open_storage(url: str | None, read_only: bool = False) -> BaseStorage:
    """An Optuna storage from its URL: sqlite:///file.db, postgresql://..., mysql://...,
    journal:///path/file.log (Optuna's journal file, for a shared disk without a database
    server), or None for memory. Every call to it waits out a busy database
    (``PatientStorage``).

    A SQLite file is only ever opened through SQLite here: POSIX locks belong to a process,
    and closing any descriptor of the file drops them all, for every SQLite connection of the
    process. A driver without its locks looks gone to the next process that closes the file
    (`llmhpo status`), which then checkpoints and deletes the WAL under it; the driver's
    later writes went to the deleted WAL, seen by no other process.

    read_only: an earlier study's storage that is only read (``[warm_start] from``): a SQLite
    file is neither created nor switched to WAL mode (its bytes stay as they were)."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = file_path(url)
        try:
            return PatientStorage(JournalStorage(JournalFileBackend(str(path))), url)
        except Exception as e:
            raise StudyError(f"cannot open journal storage {path}: {e}") from e
    path = None
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        check_sqlite_file(path)
        if not path.exists() and not read_only:
            _create_sqlite(path)
    for attempt in range(5):
        try:
            return PatientStorage(retrying(lambda: _rdb(url, path, read_only), shown(url)), shown(url))
        except StudyError:
            raise
        except Exception as e:  # a wrong URL or a missing driver; or another process creating the tables
            # two drivers creating Optuna's tables at once: the loser sees the winner's tables
            racing = any(w in str(e) for w in ("already exists", "UNIQUE constraint"))
            if racing and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StudyError(f"cannot open storage {shown(url)!r}: {e}; use e.g. sqlite:///study.db") from e
    raise AssertionError("unreachable")
