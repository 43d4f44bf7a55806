"""Where objectives run: inline in the driver, in worker processes, or on Ray actors.

An executor (the ``Executor`` protocol) runs ``objective(params)`` for submitted jobs and
reports completions asynchronously, in the order they finish. It knows nothing of
optimisers. Each worker (process or actor) builds the objective once (the base model, the
task index) and reuses it for every job it gets.

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

``base`` holds the contract and what the pools share, ``inline``, ``process`` and ``ray``
one executor each.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from llmhpo.executors.base import Executor, OnProgress, Outcome, Progress, Retry, run_objective
from llmhpo.executors.inline import InlineExecutor
from llmhpo.executors.process import ProcessExecutor, worker_context
from llmhpo.executors.process import _process_main  # noqa: F401  (a worker's entry point, started by tests)
from llmhpo.executors.ray import RayExecutor

__all__ = ["Executor", "InlineExecutor", "OnProgress", "Outcome", "ProcessExecutor", "Progress", "RayExecutor",
           "Retry", "make_executor", "run_objective", "runs_inline", "startup_note", "worker_context"]


def startup_note(runner: Any) -> str | None:
    """What the executor ``runner`` asks for will do first that takes seconds (starting or
    joining a Ray cluster), for the run to say before it waits; None when nothing is slow."""
    if runner.executor != "ray":
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # the caller's own cluster: joined already
        return None
    address = runner.address if runner.address is not None else os.environ.get("RAY_ADDRESS")
    if not address:
        return "starting a local Ray cluster..."
    return f"connecting to Ray at {address}..."


def runs_inline(runner: Any, isolate: bool = False) -> bool:
    """Whether trials run in the driver's own process: ``inline``, or ``auto`` with one
    worker (unless the objective asks to be isolated, or a trial timeout needs a process to
    stop)."""
    kind = runner.executor
    return kind == "inline" or (kind == "auto" and runner.workers == 1 and not runner.devices and not isolate
                                and runner.trial_timeout is None)


def make_executor(factory: Callable[[], Any], runner: Any, isolate: bool = False) -> Executor:
    """The executor ``runner`` (a RunnerConfig) asks for: the driver's own process
    (``runs_inline``), Ray, or worker processes."""
    if runner.executor == "ray":
        return RayExecutor(factory, runner.workers, runner.address, runner.cpus_per_trial, runner.gpus_per_trial,
                           runner.max_retries, runner.trial_timeout)
    if runs_inline(runner, isolate):
        return InlineExecutor(factory)
    return ProcessExecutor(factory, runner.workers, runner.devices, runner.max_retries, runner.trial_timeout,
                           runner.gpus_per_trial)
