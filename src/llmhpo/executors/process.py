"""The process executor: worker processes forked from a clean fork server, one pipe each.

A worker lost mid-job (killed from outside) runs its job again on a fresh process; one that
ended itself (``os._exit``, a segfault, an abort) fails its job at once, since running it
again would end the same way. A worker sends its job's progress reports over its pipe before
the Outcome, and sees only GPU ``devices[i]`` when the executor has ``devices``
(CUDA_VISIBLE_DEVICES is set before torch is imported there).
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Hashable

from llmhpo._progress import reporting
from llmhpo._tables import device_groups
from llmhpo.executors.base import Job, Outcome, Pool, Progress, WorkerObjective
from llmhpo.executors.ranks import RANK_FAILED, RANK_LOST, RankGroup, split_threads, use_threads


def _let_go_of_fork_server() -> int | None:
    """Close this process's end of the fork server's "alive" pipe and forget the server (a
    later fork starts a new one); the old server ends once no process holds the pipe. Returns
    the old server's pid (a child to reap, in the driver)."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        with server._lock:
            pid = server._forkserver_pid
            if server._forkserver_alive_fd is not None:
                os.close(server._forkserver_alive_fd)
            server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
        return pid
    except Exception:
        return None


def _die_with_parent() -> None:
    """Linux: end this worker if the driver dies (a killed run must not leave trials running).
    A worker's parent is the fork server, which ends when the last holder of its "alive" pipe
    closes it: the driver, and every worker it forked (each gets a copy, to fork from the same
    server). So the worker gives its copy up: then the driver's death ends the server, and the
    server's ends the worker (PR_SET_PDEATHSIG)."""
    _let_go_of_fork_server()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(1)


_SENDING = threading.Lock()  # one message at a time on the driver's pipe (a rank group's watchdog sends too)


class _PipeSink:
    """Sends a job's progress reports to the driver; a driver gone ends the reports, not the job."""

    def __init__(self, conn: mpc.Connection, key: Hashable):
        self.conn, self.key, self.dead = conn, key, False

    def __call__(self, phase: str, done: int | None, total: int | None, unit: str) -> None:
        if self.dead:
            return
        try:
            with _SENDING:
                self.conn.send(Progress(self.key, phase, done, total, unit))
        except Exception:  # a dead driver (its Outcome will not arrive either), or an odd value
            self.dead = True


def _send_outcome(conn: mpc.Connection, out: Outcome) -> bool:
    """Send a job's Outcome; False when the driver is gone (the worker then ends quietly:
    nobody reads its traceback, and it would bury the log of a run that was stopped)."""
    try:
        with _SENDING:
            conn.send(out)
    except (OSError, EOFError):
        return False
    except Exception as e:  # e.g. a metric that cannot be pickled
        try:
            conn.send(Outcome(out.key, None, {}, out.timings,
                              f"the trial's result could not be sent back: {type(e).__name__}: {e}", out.worker))
        except (OSError, EOFError):
            return False
    return True


def _process_main(conn: mpc.Connection, factory: Callable[[], Any], device: str | None,
                  env: dict[str, str] | None = None, threads: int | None = None, ranks: int = 1) -> None:
    """A worker process: jobs in, progress reports and outcomes out, until told to stop (None)
    or the driver goes. ``env``: the driver's environment when the worker was started (a
    forked worker would otherwise have the fork server's, from when that started);
    ``threads``: its CPU threads (None: torch's default); ``ranks`` > 1: it is rank 0 of a
    rank group over the GPUs in ``device`` ("0,1"; None: ranks on the CPU)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    devices = str(device).split(",") if device is not None else [None] * ranks
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0] if ranks > 1 else str(device)
    use_threads(threads)
    objective = WorkerObjective(factory)

    def failed(key: Hashable, reason: str) -> None:  # a follower's trial raised: the job FAILs with it
        _send_outcome(conn, Outcome(key, None, {}, {}, reason, {"host": socket.gethostname(), "pid": os.getpid(),
                                                                "device": device, "ends": True}))

    group = RankGroup(factory, devices, threads, "fork", failed) if ranks > 1 else None
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            with reporting(_PipeSink(conn, job[0])):
                out, healthy = group.run(objective, *job) if group is not None else (objective(*job), True)
            if device is not None:
                out.worker["device"] = str(device)
            if not healthy:
                out.worker["ends"] = True  # the driver starts a fresh worker for the next job
            if not _send_outcome(conn, out):
                return
            if not healthy:  # a follower is stuck in the failed trial: a fresh worker takes the next job
                return
    finally:
        if group is not None:
            group.close()


def _describe_exit(pid: int | None, exitcode: int | None) -> tuple[str, bool]:
    """(reason, worth retrying) for a worker process that ended without its result."""
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL):
            return f"the worker process (pid {pid}) crashed ({name}) while running the trial", False
        if sig == signal.SIGKILL:
            return f"the worker process (pid {pid}) was killed (SIGKILL: out of memory, or killed from outside)", True
        return f"the worker process (pid {pid}) was stopped by {name}", True
    if exitcode == RANK_FAILED:
        return f"a follower rank of the worker's rank group (pid {pid}) failed the trial", False
    if exitcode == RANK_LOST:
        return f"a follower rank of the worker's rank group (pid {pid}) ended during the trial", True
    return f"the objective ended its worker process (exit code {exitcode})", False


class _Slot:
    """One worker process of a ProcessExecutor and the job it runs."""

    def __init__(self, index: int, device: str | None):
        self.index, self.device = index, device
        self.process: Any = None
        self.conn: mpc.Connection | None = None
        self.job: Job | None = None
        self.since = 0.0

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


_server_env: dict[str, str] | None = None  # the environment the fork server was started with


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass


def worker_context(factory: Callable[[], Any] | None = None) -> Any:
    """The multiprocessing context of worker processes: ``forkserver``. A server process
    started once per driver imports the package (and the objective's module) and forks each
    worker from there, so eight workers are ready in milliseconds, not after eight
    interpreters have imported the package side by side on the driver's cores. The server
    never touches torch or CUDA, so a worker starts as clean as a spawned one; the user's
    script is imported in each worker as with ``spawn`` (hence the ``__main__`` guard), under
    the driver's environment (a server started before it changed is replaced)."""
    global _server_env
    if "forkserver" not in mp.get_all_start_methods():  # Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    env = dict(os.environ)
    if _server_env is not None and env != _server_env and not ProcessExecutor.open_pools:
        # the environment changed since the server started (another run in the same process):
        # a fresh server, so that the user's script and objective import under today's. The
        # old one ends by itself; a thread reaps it.
        pid = _let_go_of_fork_server()
        if pid is not None:
            threading.Thread(target=_reap, args=(pid,), name="llmhpo-reap", daemon=True).start()
    _server_env = env
    modules = [__name__]  # the workers' entry point, _process_main
    module = getattr(getattr(factory, "func", factory), "__module__", None)
    if module and module.startswith("llmhpo."):
        modules.append(module)
    if "llmhpo.cli" in sys.modules:  # the `llmhpo` command: each worker imports its script again
        modules.append("llmhpo.cli")
    ctx.set_forkserver_preload(modules)  # no effect once the server runs: it has them already
    return ctx


class ProcessExecutor(Pool):
    """``workers`` processes forked from a clean fork server (``worker_context``), each with
    its own pipe: the driver knows which process runs which job, so a lost process costs only
    its own job, and a job past its timeout is stopped by ending its process.

    ``devices``: GPU ids, one per worker, or grouped by ``gpus_per_trial`` (``device_groups``:
    k per worker, each worker rank 0 of a rank group of k processes; or 1/n: n workers per
    GPU). Without devices the workers split the usable cores between them (``split_threads``);
    ``gpus_per_trial`` = k > 1 without devices runs CPU rank groups (gloo), for tests."""

    #: pools not closed yet in this process (the fork server is not replaced under them)
    open_pools = 0

    def __init__(self, factory: Callable[[], Any], workers: int, devices: tuple[str, ...] = (),
                 max_retries: int = 1, trial_timeout: float | None = None, gpus_per_trial: float = 0.0):
        self.slots = workers
        self._factory = factory
        self._init_pool(max_retries, trial_timeout)
        self._ctx = worker_context(factory)
        ProcessExecutor.open_pools += 1
        self._open = True
        self._ranks = int(gpus_per_trial) if gpus_per_trial > 1 else 1
        groups = device_groups(tuple(devices), gpus_per_trial) if devices else [()] * workers
        self._slots = [_Slot(i, ",".join(groups[i]) or None) for i in range(workers)]
        self._threads = None if devices else split_threads(workers * self._ranks)
        # the fork server starts now and imports the package while the driver opens its
        # storage; each worker is forked from it for its first job
        if self._ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def _start(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe()
        slot.process = self._ctx.Process(target=_process_main,
                                         args=(child, self._factory, slot.device, dict(os.environ),
                                               self._threads, self._ranks),
                                         name=f"llmhpo-worker-{slot.index}")
        slot.process.start()
        child.close()
        slot.conn = parent

    def _stop(self, slot: _Slot) -> None:
        if slot.process is not None:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(timeout=5)
        if slot.conn is not None:
            slot.conn.close()
        slot.process, slot.conn = None, None

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.job is not None:
                continue
            if not slot.alive():
                self._stop(slot)
                self._start(slot)
            job = self._queue.popleft()
            try:
                slot.conn.send((job.key, job.params, job.fidelity))
            except (BrokenPipeError, OSError):  # died since: start it again and resend
                self._stop(slot)
                self._start(slot)
                slot.conn.send((job.key, job.params, job.fidelity))
            slot.job, slot.since = job, time.time()

    def _lost(self, slot: _Slot, reason: str, retry: bool, out: list[Outcome]) -> None:
        """``slot``'s process ended without the job's result: run it again or fail it."""
        job = slot.job
        slot.job = None
        self._stop(slot)
        self._retry_or_fail(job, reason, retry, slot.since, self._where(slot), out)

    @staticmethod
    def _where(slot: _Slot) -> dict[str, Any]:
        return {"host": socket.gethostname(), "slot": slot.index, "device": slot.device}

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of the jobs finished by now; blocks until at least one is (or ``timeout``)."""
        deadline = None if timeout is None else time.time() + timeout
        out: list[Outcome] = []
        while True:
            busy = [s for s in self._slots if s.job is not None]
            if not busy and not self._queue:
                return out
            wait_for = self._wait_for(deadline, [s.since for s in busy])
            objs = {}
            for s in busy:
                objs[s.conn] = s
                objs[s.process.sentinel] = s
            ready = mpc.wait(list(objs), timeout=wait_for)
            seen = set()
            for obj in ready:
                slot = objs[obj]
                if slot.index in seen or slot.job is None:
                    continue
                seen.add(slot.index)
                result = self._receive(slot)
                if result is not None:
                    result.retries = slot.job.retries
                    result.worker.setdefault("slot", slot.index)
                    slot.job = None
                    out.append(result)
                    if result.worker.pop("ends", False):  # a rank group's worker that ends after this job
                        self._stop(slot)
                elif not slot.process.is_alive():
                    slot.process.join(timeout=1)
                    reason, retry = _describe_exit(slot.process.pid, slot.process.exitcode)
                    self._lost(slot, reason, retry, out)
            if self.trial_timeout is not None:
                now = time.time()
                for s in self._slots:
                    if s.job is not None and now - s.since >= self.trial_timeout:
                        job = s.job
                        s.job = None
                        self._stop(s)
                        out.append(self._timed_out(job, s.since, self._where(s)))
            self._dispatch()
            if out or (deadline is not None and time.time() >= deadline):
                return out

    def _receive(self, slot: _Slot) -> Outcome | None:
        """The slot's Outcome if it has arrived (None if not, or the pipe broke); the progress
        reports that came before it go to ``on_progress``."""
        try:
            while slot.conn.poll():
                msg = slot.conn.recv()
                if not isinstance(msg, Progress):
                    return msg
                if self.on_progress is not None:
                    self.on_progress(msg.key, msg.phase, msg.done, msg.total, msg.unit)
        except (EOFError, OSError):
            pass
        return None

    def workers(self) -> list[dict[str, Any]]:
        host = socket.gethostname()
        return [{"host": host, "pid": s.process.pid if s.process is not None else None, "device": s.device,
                 "trial": None if s.job is None else s.job.key, "since": s.since if s.job is not None else None}
                for s in self._slots]

    def close(self) -> None:
        """Stop every worker: an idle one is asked to leave, a busy one (interrupt, wall
        time) is killed now."""
        for s in self._slots:
            if s.process is None:
                continue
            if s.job is None and s.process.is_alive():
                try:
                    s.conn.send(None)
                    s.process.join(timeout=5)
                except (BrokenPipeError, OSError):
                    pass
            self._stop(s)
            s.job = None
        self._queue.clear()
        if self._open:
            self._open = False
            ProcessExecutor.open_pools -= 1
