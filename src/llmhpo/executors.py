"""Where objectives run: inline in the driver, in worker processes, or on Ray actors.

An executor runs ``objective(params)`` for submitted jobs and reports completions
asynchronously, in the order they finish. It knows nothing of optimisers. Each worker
(process or actor) builds the objective once (the base model, the task index) and
reuses it for every job it gets.

Faults touch only the job they hit:

- a worker lost mid-job (its process killed, its actor or node gone) runs the job again
  on another worker, up to ``max_retries`` times, then reports it failed with the reason;
  a process that ended itself (``os._exit``, a segfault, an abort) fails its job at once,
  since running it again would end the same way;
- a job past ``trial_timeout`` is stopped (its worker killed and replaced) and fails with
  "timeout after ...";
- ``sys.exit`` in the objective fails the job; the worker goes on.

What a job reports with ``llmhpo.objectives.progress`` goes to ``on_progress(key, phase,
done, total, unit)``, set by the runner: a worker process sends it over its pipe before the
job's Outcome (throttled to a few messages a second); the inline executor calls it directly;
Ray actors report nothing.

With ``devices`` (process executor), worker i sees only GPU devices[i]
(CUDA_VISIBLE_DEVICES is set before torch is imported there); Ray gives each actor the
GPUs it reserved (``gpus_per_trial``).
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
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from llmhpo._progress import reporting
from llmhpo.errors import ConfigError, TrialFailed

#: the runner's callback for progress reports: (key, phase, done, total, unit) -> None
OnProgress = Callable[[Hashable, str, "int | None", "int | None", str], None]


@dataclass
class Outcome:
    """One finished job. value None = failure, with ``error``."""

    key: Hashable
    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # times the job was started again after losing its worker


@dataclass
class Retry:
    """A job whose worker was lost, started again (for the run's log and the trial's record)."""

    key: Hashable
    reason: str
    attempt: int  # 1 for the first retry


@dataclass
class Progress:
    """A running job's report (``llmhpo.objectives.progress``), sent before its Outcome."""

    key: Hashable
    phase: str
    done: int | None
    total: int | None
    unit: str = ""


@dataclass
class _Job:
    key: Hashable
    params: dict[str, Any]
    fidelity: Any
    retries: int = 0


# ---------------------------------------------------------------- worker side
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


def run_objective(objective: Any, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> Outcome:
    """Call the objective (with ``fidelity`` when multi-fidelity; params None: the objective's
    ``base()``, the untuned reference); any exception becomes a failed Outcome with its reason."""
    start = time.time()
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        if params is None:
            r = objective.base()
        else:
            r = objective(params) if fidelity is None else objective(params, fidelity=fidelity)
        out = Outcome(key, r.value, dict(r.metrics), dict(r.timings), None, worker)
    except TrialFailed as e:
        out = Outcome(key, None, dict(getattr(e, "metrics", {}) or {}), {}, str(e), worker)
    except Exception as e:  # a trial's crash is a trial state, not the study's crash
        tb = traceback.format_exc(limit=8)
        last = traceback.extract_tb(e.__traceback__)[-1]  # where it was raised, for the one-line reason
        where = f" ({os.path.basename(last.filename)}:{last.lineno} in {last.name})"
        out = Outcome(key, None, {"traceback": tb}, {}, f"{type(e).__name__}: {e}{where}", worker)
    except SystemExit as e:  # sys.exit() in the objective ends its trial, not the driver
        out = Outcome(key, None, {}, {}, f"the objective called sys.exit({e.code!r})", worker)
    out.timings.setdefault("trial", time.time() - start)
    out.worker.update(start=start, end=time.time())
    return out


class _WorkerObjective:
    """The objective of one worker, built on its first job; a failed set-up fails that job
    and is tried again on the next."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory, self._objective = factory, None

    def __call__(self, key: Hashable, params: dict[str, Any], fidelity: Any) -> Outcome:
        if self._objective is None:
            try:
                self._objective = self._factory()
            except Exception as e:
                return Outcome(key, None, {"traceback": traceback.format_exc(limit=8)}, {},
                               f"objective set-up failed: {type(e).__name__}: {e}",
                               {"host": socket.gethostname(), "pid": os.getpid()})
        return run_objective(self._objective, key, params, fidelity)


class _PipeSink:
    """Sends a job's progress reports to the driver; a driver gone ends the reports, not the job."""

    def __init__(self, conn: mpc.Connection, key: Hashable):
        self.conn, self.key, self.dead = conn, key, False

    def __call__(self, phase: str, done: int | None, total: int | None, unit: str) -> None:
        if self.dead:
            return
        try:
            self.conn.send(Progress(self.key, phase, done, total, unit))
        except Exception:  # a dead driver (its Outcome will not arrive either), or an odd value
            self.dead = True


def _send_outcome(conn: mpc.Connection, out: Outcome) -> bool:
    """Send a job's Outcome; False when the driver is gone (the worker then ends quietly:
    nobody reads its traceback, and it would bury the log of a run that was stopped)."""
    try:
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
                  env: dict[str, str] | None = None) -> None:
    """A worker process: jobs in, progress reports and outcomes out, until told to stop (None)
    or the driver goes. ``env``: the driver's environment when the worker was started (a
    forked worker would otherwise have the fork server's, from when that started)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    objective = _WorkerObjective(factory)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        with reporting(_PipeSink(conn, job[0])):
            out = objective(*job)
        if not _send_outcome(conn, out):
            return


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
    return f"the objective ended its worker process (exit code {exitcode})", False


# ---------------------------------------------------------------- executors
class InlineExecutor:
    """Runs each job in the driver process when ``wait`` is called (one slot). No timeout and
    no isolation: use the process executor for those."""

    slots = 1

    def __init__(self, factory: Callable[[], Any]):
        self._objective = _WorkerObjective(factory)
        self._jobs: deque[_Job] = deque()
        self.retries: list[Retry] = []
        self.on_progress: OnProgress | None = None

    def submit(self, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> None:
        self._jobs.append(_Job(key, params, fidelity))

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._jobs:
            return []
        job = self._jobs.popleft()
        on_progress = self.on_progress
        sink = None if on_progress is None else (
            lambda phase, done, total, unit: on_progress(job.key, phase, done, total, unit))
        with reporting(sink):
            return [self._objective(job.key, job.params, job.fidelity)]

    def workers(self) -> list[dict[str, Any]]:
        return [{"host": socket.gethostname(), "pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "trial": None}]

    def close(self) -> None:
        self._jobs.clear()


class _Pool:
    """What the process and Ray executors share: a queue of jobs for their workers, and what
    happens to a job whose worker was lost or ran past the timeout."""

    max_retries: int
    trial_timeout: float | None

    def _init_pool(self, max_retries: int, trial_timeout: float | None) -> None:
        self.max_retries, self.trial_timeout = max_retries, trial_timeout
        self._queue: deque[_Job] = deque()
        self.retries: list[Retry] = []
        self.on_progress: OnProgress | None = None

    def submit(self, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> None:
        self._queue.append(_Job(key, params, fidelity))
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _retry_or_fail(self, job: _Job, reason: str, retry: bool, since: float, worker: dict[str, Any],
                       out: list[Outcome]) -> None:
        """``job``'s worker ended without its result: queue it again (first in line) while
        retries are left, else report it failed with the reason."""
        if retry and job.retries < self.max_retries:
            job.retries += 1
            self.retries.append(Retry(job.key, reason, job.retries))
            self._queue.appendleft(job)
        else:
            what = reason if not job.retries else f"{reason} (after {job.retries} retr{'y' if job.retries == 1 else 'ies'})"
            out.append(Outcome(job.key, None, {}, {"trial": time.time() - since}, what, worker, job.retries))

    def _timed_out(self, job: _Job, since: float, worker: dict[str, Any]) -> Outcome:
        return Outcome(job.key, None, {}, {"trial": time.time() - since},
                       f"timeout after {self.trial_timeout:g} s ([runner] trial_timeout)", worker, job.retries)

    def _wait_for(self, deadline: float | None, busy_since: list[float]) -> float | None:
        """How long to block: until ``deadline``, or the first running job's timeout."""
        wait_for = None if deadline is None else max(0.0, deadline - time.time())
        if self.trial_timeout is not None and busy_since:
            left = max(0.0, min(busy_since) + self.trial_timeout - time.time())
            wait_for = left if wait_for is None else min(wait_for, left)
        return wait_for


class _Slot:
    """One worker process of a ProcessExecutor and the job it runs."""

    def __init__(self, index: int, device: str | None):
        self.index, self.device = index, device
        self.process: Any = None
        self.conn: mpc.Connection | None = None
        self.job: _Job | None = None
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
    modules = ["llmhpo.executors"]
    module = getattr(getattr(factory, "func", factory), "__module__", None)
    if module and module.startswith("llmhpo."):
        modules.append(module)
    if "llmhpo.cli" in sys.modules:  # the `llmhpo` command: each worker imports its script again
        modules.append("llmhpo.cli")
    ctx.set_forkserver_preload(modules)  # no effect once the server runs: it has them already
    return ctx


class ProcessExecutor(_Pool):
    """``workers`` processes forked from a clean fork server (``worker_context``), each with
    its own pipe: the driver knows which process runs which job, so a lost process costs only
    its own job, and a job past its timeout is stopped by ending its process."""

    #: pools not closed yet in this process (the fork server is not replaced under them)
    open_pools = 0

    def __init__(self, factory: Callable[[], Any], workers: int, devices: tuple[str, ...] = (),
                 max_retries: int = 1, trial_timeout: float | None = None):
        self.slots = workers
        self._factory = factory
        self._init_pool(max_retries, trial_timeout)
        self._ctx = worker_context(factory)
        ProcessExecutor.open_pools += 1
        self._open = True
        self._slots = [_Slot(i, devices[i] if devices else None) for i in range(workers)]
        # the fork server starts now and imports the package while the driver opens its
        # storage; each worker is forked from it for its first job
        if self._ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def _start(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe()
        slot.process = self._ctx.Process(target=_process_main,
                                         args=(child, self._factory, slot.device, dict(os.environ)),
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


class _TrialActor:
    """A Ray actor that keeps its objective (base model, task index) between trials."""

    def __init__(self, factory: Callable[[], Any]):
        self._objective = _WorkerObjective(factory)

    def info(self) -> dict[str, Any]:
        import ray

        return {"host": socket.gethostname(), "pid": os.getpid(),
                "device": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
                "node": ray.get_runtime_context().get_node_id()}

    def run(self, key: Hashable, params: dict[str, Any], fidelity: Any) -> Outcome:
        out = self._objective(key, params, fidelity)
        out.worker.setdefault("host", socket.gethostname())
        return out


class _Actor:
    def __init__(self, handle: Any, ready_ref: Any):
        self.handle, self.ready_ref = handle, ready_ref
        self.info: dict[str, Any] | None = None
        self.job: _Job | None = None
        self.ref: Any = None
        self.since = 0.0


class RayExecutor(_Pool):
    """Long-lived worker actors on a Ray cluster, one per trial slot, each reserving
    ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs, so Ray spreads a study over every
    GPU of every node. ``address``: "auto" joins the cluster this machine belongs to,
    "ray://host:10001" one reached through Ray client, None starts a local one. ``workers``
    0: as many actors as the cluster's resources fit."""

    def __init__(self, factory: Callable[[], Any], workers: int = 0, address: str | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, max_retries: int = 1,
                 trial_timeout: float | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("[runner] executor = \"ray\" needs Ray: pip install 'llmhpo[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as e:
                raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {e}; start it with "
                                  "`ray start --head` (see docs/cluster.md) or leave [runner] address out "
                                  "to start a local one") from None
        self._init_pool(max_retries, trial_timeout)
        self._cpus, self._gpus = cpus_per_trial, gpus_per_trial
        if not workers:
            workers = self._fit(ray.cluster_resources())
        self.slots = workers
        self._cls = ray.remote(_TrialActor)
        self._factory = factory
        self._actors = [self._new_actor() for _ in range(workers)]
        self._replaced = 0

    def _fit(self, resources: dict[str, float]) -> int:
        fits = []
        if self._gpus > 0:
            fits.append(int(resources.get("GPU", 0) // self._gpus))
        if self._cpus > 0:
            fits.append(int(resources.get("CPU", 0) // self._cpus))
        n = min(fits) if fits else 1
        if n < 1:
            raise ConfigError(f"the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) "
                              f"cannot fit one trial of {self._cpus:g} CPUs and {self._gpus:g} GPUs; "
                              "lower [runner] cpus_per_trial / gpus_per_trial or add nodes")
        return n

    def _new_actor(self) -> _Actor:
        handle = self._cls.options(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=0,
                                   max_concurrency=1).remote(self._factory)
        return _Actor(handle, handle.info.remote())

    def _dispatch(self) -> None:
        for a in self._actors:
            if not self._queue:
                return
            if a.info is not None and a.job is None:
                job = self._queue.popleft()
                a.job, a.since = job, time.time()
                a.ref = a.handle.run.remote(job.key, job.params, job.fidelity)

    def _replace(self, a: _Actor) -> None:
        try:
            self._ray.kill(a.handle, no_restart=True)
        except Exception:
            pass
        self._replaced += 1
        self._actors[self._actors.index(a)] = self._new_actor()

    def _lost(self, a: _Actor, reason: str, out: list[Outcome]) -> None:
        job = a.job
        a.job = None
        self._replace(a)
        self._retry_or_fail(job, reason, True, a.since, dict(a.info or {}), out)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        ray = self._ray
        deadline = None if timeout is None else time.time() + timeout
        out: list[Outcome] = []
        while True:
            busy = [a for a in self._actors if a.job is not None]
            starting = [a for a in self._actors if a.info is None]
            if not busy and not self._queue:
                return out
            refs = {a.ref: a for a in busy}
            refs.update({a.ready_ref: a for a in starting})
            wait_for = self._wait_for(deadline, [a.since for a in busy])
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=wait_for)
            if ready:  # everything else that is ready too
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in ready:
                a = refs[ref]
                if ref is a.ready_ref and a.info is None:
                    try:
                        a.info = ray.get(ref)
                    except Exception:  # died before it started (its node left): another one
                        if self._replaced > 10 * self.slots + 10:
                            raise RuntimeError("Ray worker actors keep dying before they start; "
                                               "check the cluster (`ray status`)") from None
                        self._replace(a)
                    continue
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    where = f" on {a.info.get('host')}" if a.info else ""
                    self._lost(a, f"the Ray worker actor{where} was lost ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200]})", out)
                    continue
                except Exception as e:
                    result = Outcome(a.job.key, None, {}, {}, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
                result.retries = a.job.retries
                result.worker = {**(a.info or {}), **result.worker}
                a.job, a.ref = None, None
                out.append(result)
            if self.trial_timeout is not None:
                now = time.time()
                for a in list(self._actors):
                    if a.job is not None and now - a.since >= self.trial_timeout:
                        job, info = a.job, dict(a.info or {})
                        a.job = None
                        self._replace(a)
                        out.append(self._timed_out(job, a.since, info))
            self._dispatch()
            if out or (deadline is not None and time.time() >= deadline):
                return out

    def workers(self) -> list[dict[str, Any]]:
        return [{**(a.info or {"host": None, "pid": None, "device": None}),
                 "trial": None if a.job is None else a.job.key, "since": a.since if a.job is not None else None}
                for a in self._actors]

    def close(self) -> None:
        for a in self._actors:
            try:
                self._ray.kill(a.handle, no_restart=True)
            except Exception:
                pass
        self._actors.clear()
        self._queue.clear()
        if self._started:
            self._ray.shutdown()


def startup_note(runner: Any) -> str | None:
    """What the executor ``runner`` asks for will do first that takes seconds (starting or
    joining a Ray cluster), for the run to say before it waits; None when nothing is slow."""
    if runner.executor != "ray":
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # the caller's own cluster: joined already
        return None
    if runner.address is None:
        return "starting a local Ray cluster..."
    return f"connecting to Ray at {runner.address}..."


def runs_inline(runner: Any, isolate: bool = False) -> bool:
    """Whether trials run in the driver's own process: ``inline``, or ``auto`` with one
    worker (unless the objective asks to be isolated, or a trial timeout needs a process to
    stop)."""
    kind = runner.executor
    return kind == "inline" or (kind == "auto" and runner.workers == 1 and not runner.devices and not isolate
                                and runner.trial_timeout is None)


def make_executor(factory: Callable[[], Any], runner: Any, isolate: bool = False):
    """The executor ``runner`` (a RunnerConfig) asks for: the driver's own process
    (``runs_inline``), Ray, or worker processes."""
    if runner.executor == "ray":
        return RayExecutor(factory, runner.workers, runner.address, runner.cpus_per_trial, runner.gpus_per_trial,
                           runner.max_retries, runner.trial_timeout)
    if runs_inline(runner, isolate):
        return InlineExecutor(factory)
    return ProcessExecutor(factory, runner.workers, runner.devices, runner.max_retries, runner.trial_timeout)
