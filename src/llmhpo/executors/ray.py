"""The Ray executor: long-lived worker actors on a Ray cluster, one per trial slot.

Ray is imported when the executor starts, never before (reading a study needs no Ray). An
actor lost mid-job (killed, or its node gone) is replaced and its job runs again on the
first free actor, up to ``max_retries`` times. Any actor takes any job: a multi-fidelity
promotion may run on another node than its configuration's earlier rungs, and goes on from
the checkpoint they left on the disk every node shares. Actors report no progress.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Hashable

from llmhpo.errors import ConfigError
from llmhpo.executors.base import Job, Outcome, Pool, WorkerObjective
from llmhpo.executors.ranks import RankGroup, use_threads


class _TrialActor:
    """A Ray actor that keeps its objective (base model, task index) between trials, on
    ``threads`` CPU threads; with ``ranks`` > 1 GPUs it is rank 0 of a rank group, one rank
    per GPU Ray gave it."""

    def __init__(self, factory: Callable[[], Any], threads: int = 1, ranks: int = 1):
        self._objective = WorkerObjective(factory)
        self._gpus = os.environ.get("CUDA_VISIBLE_DEVICES") or None
        self._group = None
        if ranks > 1:
            devices = self._gpus.split(",") if self._gpus else [None] * ranks
            if devices[0] is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]  # before CUDA starts: rank 0's GPU alone
            threads = max(1, threads // ranks)
            self._group = RankGroup(factory, devices, threads, "spawn")
        use_threads(threads)

    def info(self) -> dict[str, Any]:
        import ray

        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self._gpus,
                "node": ray.get_runtime_context().get_node_id()}

    def run(self, key: Hashable, params: dict[str, Any], fidelity: Any) -> Outcome:
        if self._group is None:
            out = self._objective(key, params, fidelity)
        else:
            out, healthy = self._group.run(self._objective, key, params, fidelity)
            if not healthy:  # a follower is stuck in the failed trial: the next job starts a fresh group
                self._group.close()
        out.worker.setdefault("host", socket.gethostname())
        if self._gpus:
            out.worker["device"] = self._gpus
        return out


class _Actor:
    def __init__(self, handle: Any, ready_ref: Any):
        self.handle, self.ready_ref = handle, ready_ref
        self.info: dict[str, Any] | None = None
        self.job: Job | None = None
        self.ref: Any = None
        self.since = 0.0


class RayExecutor(Pool):
    """Long-lived worker actors on a Ray cluster, one per trial slot, each reserving
    ``cpus_per_trial`` CPUs (it computes on that many threads) and ``gpus_per_trial`` GPUs
    (a fraction shares one; k > 1 runs a rank group of k processes), so Ray spreads a study
    over every GPU of every node. ``address``: "auto" joins the cluster this machine belongs to,
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
            # left out: a local cluster of its own (RAY_ADDRESS still names one to join), never
            # whichever cluster another program happens to run on this machine
            where = address if address is not None else (os.environ.get("RAY_ADDRESS") or "local")
            try:
                ray.init(address=where, include_dashboard=False, log_to_driver=False,
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
        ranks = int(self._gpus) if self._gpus > 1 else 1
        handle = self._cls.options(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=0,
                                   max_concurrency=1).remote(self._factory, max(1, int(self._cpus)), ranks)
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
