"""The inline executor: jobs run in the driver's own process, one at a time."""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any, Callable, Hashable

from llmhpo._progress import reporting
from llmhpo.executors.base import Job, OnProgress, Outcome, Retry, WorkerObjective


class InlineExecutor:
    """Runs each job in the driver process when ``wait`` is called (one slot). No timeout and
    no isolation: use the process executor for those."""

    slots = 1

    def __init__(self, factory: Callable[[], Any]):
        self._objective = WorkerObjective(factory)
        self._jobs: deque[Job] = deque()
        self.retries: list[Retry] = []
        self.on_progress: OnProgress | None = None

    def submit(self, key: Hashable, params: dict[str, Any] | None, fidelity: Any = None) -> None:
        self._jobs.append(Job(key, params, fidelity))

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
