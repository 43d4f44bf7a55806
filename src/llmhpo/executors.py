"""Where objectives run: inline in the driver, or in a pool of worker processes.

An executor runs ``objective(params)`` for submitted jobs and reports completions
asynchronously, in the order they finish. It knows nothing of optimisers. Each worker
process builds the objective once (the base model, the task index) and reuses it;
with ``devices``, worker i sees only GPU devices[i] (CUDA_VISIBLE_DEVICES is set before
torch is imported there).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from llmhpo.errors import TrialFailed


@dataclass
class Outcome:
    """One finished job. value None = failure, with ``error``."""

    key: Hashable
    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- worker side
_OBJECTIVE: Any = None
_OBJECTIVE_FACTORY: Callable[[], Any] | None = None


def _die_with_parent() -> None:
    """Linux: end this worker if the driver dies (a killed run must not leave trials running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _init_worker(factory: Callable[[], Any], devices: Any) -> None:
    global _OBJECTIVE_FACTORY
    _die_with_parent()
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    _OBJECTIVE_FACTORY = factory


def run_objective(objective: Any, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> Outcome:
    """Call the objective (with ``fidelity`` when multi-fidelity); any exception becomes a
    failed Outcome with its reason."""
    start = time.time()
    worker = {"pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
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


def _worker_call(key: Hashable, params: dict[str, Any], fidelity: Any = None) -> Outcome:
    global _OBJECTIVE
    if _OBJECTIVE is None:
        try:
            _OBJECTIVE = _OBJECTIVE_FACTORY()
        except Exception as e:
            return Outcome(key, None, {"traceback": traceback.format_exc(limit=8)}, {},
                           f"objective set-up failed: {type(e).__name__}: {e}", {"pid": os.getpid()})
    return run_objective(_OBJECTIVE, key, params, fidelity)


# ---------------------------------------------------------------- executors
class InlineExecutor:
    """Runs each job in the driver process when ``wait`` is called (one slot)."""

    slots = 1

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._objective = None
        self._jobs: list[tuple[Hashable, dict, Any]] = []

    def submit(self, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> None:
        self._jobs.append((key, params, fidelity))

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._jobs:
            return []
        if self._objective is None:
            self._objective = self._factory()
        key, params, fidelity = self._jobs.pop(0)
        return [run_objective(self._objective, key, params, fidelity)]

    def close(self) -> None:
        self._jobs.clear()


class ProcessExecutor:
    """A pool of ``workers`` processes (spawned, so CUDA and torch start clean in each)."""

    def __init__(self, factory: Callable[[], Any], workers: int, devices: tuple[str, ...] = ()):
        self.slots = workers
        self._factory, self._devices = factory, devices
        self._futures: dict[cf.Future, Hashable] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        queue = None
        if self._devices:
            queue = ctx.Queue()
            for d in self._devices:
                queue.put(d)
        return cf.ProcessPoolExecutor(self.slots, mp_context=ctx, initializer=_init_worker,
                                      initargs=(self._factory, queue))

    def submit(self, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> None:
        self._futures[self._pool.submit(_worker_call, key, params, fidelity)] = key

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out, broken = [], False
        for fut in done:
            key = self._futures.pop(fut)
            try:
                out.append(fut.result())
            except cf.process.BrokenProcessPool as e:
                broken = True
                out.append(Outcome(key, None, error=f"worker process died ({e}); likely killed for memory"))
            except Exception as e:
                out.append(Outcome(key, None, error=f"{type(e).__name__}: {e}"))
        if broken:
            # every job of a broken pool is lost: report them and start a fresh pool
            for fut, key in list(self._futures.items()):
                out.append(Outcome(key, None, error="worker pool restarted after a worker died"))
            self._futures.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return out

    def close(self) -> None:
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        if self._futures:  # jobs still running (interrupt, wall time): stop them now
            for p in procs:
                if p.is_alive():
                    p.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


def make_executor(factory: Callable[[], Any], workers: int, kind: str = "auto", devices: tuple[str, ...] = ()):
    if kind == "inline" or (kind == "auto" and workers == 1 and not devices):
        return InlineExecutor(factory)
    return ProcessExecutor(factory, workers, devices)
