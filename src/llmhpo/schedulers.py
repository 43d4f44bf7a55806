"""Multi-fidelity schedulers: which configuration runs at which resource, and which goes on.

The optimiser decides *what* to try (its ``ask``); a scheduler decides *how long*: each
configuration climbs rungs of resource r_0 < r_1 < ... < r_K = max, with
r_k = max * eta^(k - K) and K = floor(log_eta(max / min)), and only the best go on.

- Successive halving (Jamieson & Talwalkar 2016): a bracket of eta^K configurations at r_0;
  when a rung is complete, the best floor(n_k / eta) are promoted to the next rung.
- Hyperband (Li et al. 2018, Algorithm 1): brackets s = K, K-1, ..., 0 in turn; bracket s
  starts n = ceil((K + 1) / (s + 1) * eta^s) configurations at rung K - s and halves them
  synchronously.
- ASHA (Li et al. 2020, Algorithm 2): asynchronous; whenever a worker is free, promote a
  configuration that is in the top floor(n_k / eta) of the n_k results of its rung and not
  yet promoted (highest rung first), else start a new configuration at rung 0. No worker
  waits for a rung to fill.

Promotions rank a rung's configurations by their scores at that rung, or, where a model of
every rung's scores predicts each configuration's top-rung score (``predicted``), by that
prediction. Pure logic: no storage, no objective, no printing. Values are minimised (failures count as
+inf); the runner owns the bookkeeping and tells the scheduler what happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmhpo.errors import did_you_mean

SCHEDULERS = ("asha", "sh", "hyperband")


def rungs(r_min: float, r_max: float, eta: int, integer: bool = True) -> list[float]:
    """r_0 < ... < r_K = r_max, r_k = r_max * eta^(k - K), K = floor(log_eta(r_max / r_min))."""
    K = int(math.floor(math.log(r_max / r_min) / math.log(eta) + 1e-9))
    out = [r_max * eta ** (k - K) for k in range(K + 1)]
    if integer:
        out = [float(max(1, round(r))) for r in out]
    return out


@dataclass
class RungRecord:
    """One configuration's rung record, as the scheduler keeps it. results: rung -> value (None: failed)."""

    id: int
    bracket: int
    start_rung: int
    results: dict[int, float | None] = field(default_factory=dict)
    running: int | None = None  # the rung being computed
    promoted: set[int] = field(default_factory=set)  # rungs from which it went on
    stopped: bool = False  # failed, or left behind by a synchronous rung

    @property
    def top(self) -> int | None:
        """The highest rung with a result."""
        return max(self.results) if self.results else None


@dataclass(frozen=True)
class Job:
    """Start a new configuration (config_id None) in ``bracket`` at ``rung``, or continue
    configuration ``config_id`` to ``rung``."""

    rung: int
    bracket: int
    config_id: int | None = None


def _score(v: float | None) -> float:
    return math.inf if v is None else v


class Scheduler:
    """Base: rung arithmetic and the configurations' states. ``next_job`` says what a free
    worker should do now (None: nothing until a running job finishes)."""

    name = "base"

    def __init__(self, rung_resources: list[float], eta: int):
        self.r = list(rung_resources)
        self.K = len(self.r) - 1
        self.eta = eta
        self.configs: dict[int, RungRecord] = {}
        #: a model's predicted top-rung score of each configuration (lower is better), set by the
        #: runner with ``[fidelity] model = "all_rungs"``: promotions rank a rung by it, where a
        #: configuration has one, instead of by the rung's own score
        self.predicted: dict[int, float] = {}

    # the runner's reports
    def add(self, config_id: int, job: Job) -> RungRecord:
        c = RungRecord(config_id, job.bracket, job.rung, running=job.rung)
        self.configs[config_id] = c
        return c

    def started(self, config_id: int, rung: int) -> None:
        c = self.configs[config_id]
        if c.top is not None and rung > c.top:
            c.promoted.add(c.top)
        c.running = rung

    def finished(self, config_id: int, rung: int, value: float | None) -> None:
        """value: minimised; None for a failure (the configuration stops)."""
        c = self.configs[config_id]
        c.results[rung] = value
        c.running = None
        if value is None:
            c.stopped = True

    def _rank(self, c: RungRecord, k: int) -> tuple[float, int]:
        """The sort key of configuration c among the results of rung k (failures last)."""
        if c.results[k] is None or c.id not in self.predicted:
            return _score(c.results[k]), c.id
        return self.predicted[c.id], c.id

    def waiting(self) -> list[RungRecord]:
        """Configurations that may still go on (not running, not stopped, below the top)."""
        return [c for c in self.configs.values()
                if c.running is None and not c.stopped and c.top is not None and c.top < self.K]

    def next_job(self) -> Job | None:
        raise NotImplementedError

    def stop_waiting(self) -> list[int]:
        """Configurations a synchronous scheduler has left behind: they stop (PRUNED)."""
        return []

    def keep_checkpoints(self, extra: int) -> set[int]:
        """Configurations whose checkpoint a promotion may still use."""
        raise NotImplementedError


class ASHA(Scheduler):
    name = "asha"

    def next_job(self) -> Job | None:
        for k in range(self.K - 1, -1, -1):
            at_k = [c for c in self.configs.values() if k in c.results]
            n_top = len(at_k) // self.eta
            if n_top == 0:
                continue
            ranked = sorted(at_k, key=lambda c: self._rank(c, k))[:n_top]
            for c in ranked:
                if c.results[k] is not None and not c.stopped and c.running is None and c.top == k:
                    return Job(k + 1, 0, c.id)
        return Job(0, 0)

    def keep_checkpoints(self, extra: int) -> set[int]:
        """Waiting configurations within their rung's promotion slots, plus ``extra`` per rung."""
        keep: set[int] = set()
        for k in range(self.K):
            at_k = [c for c in self.configs.values() if k in c.results]
            waiting = sorted((c for c in at_k if c.top == k and not c.stopped and c.running is None
                              and c.results[k] is not None), key=lambda c: self._rank(c, k))
            keep |= {c.id for c in waiting[: len(at_k) // self.eta + extra]}
        return keep


class Hyperband(Scheduler):
    """Hyperband's brackets, each a synchronous successive halving; ``brackets`` restricts
    the cycle (successive halving alone: ``[K]``). A bracket that waits for its rung to fill
    lets the next bracket start, so workers are not left idle."""

    name = "hyperband"

    def __init__(self, rung_resources: list[float], eta: int, brackets: list[int] | None = None):
        super().__init__(rung_resources, eta)
        self.cycle = brackets if brackets is not None else list(range(self.K, -1, -1))
        self.opened: list[int] = []  # bracket ids in order of opening; bracket id -> s
        self.s_of: dict[int, int] = {}

    def size(self, s: int) -> int:
        """n: configurations that bracket s starts, ceil((K + 1) / (s + 1) * eta^s) (Li et al.
        2018, Algorithm 1), in integers: no rounding error can leave the top rung empty."""
        return -(-(self.K + 1) * self.eta ** s // (s + 1))

    def rung_size(self, s: int, i: int) -> int:
        """n_i = floor(n eta^-i): configurations that reach the bracket's i-th rung."""
        return self.size(s) // self.eta ** i

    def _members(self, b: int) -> list[RungRecord]:
        return [c for c in self.configs.values() if c.bracket == b]

    def add(self, config_id: int, job: Job) -> RungRecord:
        if job.bracket not in self.s_of:
            self.s_of[job.bracket] = self.K - job.rung
            self.opened.append(job.bracket)
        return super().add(config_id, job)

    def _rungs(self, b: int):
        """For each complete rung of bracket b, lowest first: (k, winners, losers). Winners are
        the best min(n_{i+1}, eligible) results; eligible: succeeded, and not stopped before
        they could go on (a failure or an earlier stop shrinks the next rung, never hangs it)."""
        s = self.s_of[b]
        members = self._members(b)
        expected = self.size(s)
        if len(members) < expected:
            return
        for i in range(s):
            k = self.K - s + i
            at_k = [c for c in members if k in c.results]
            if len(at_k) < expected or any(c.running == k for c in members):
                return  # the rung is not complete yet
            ok = [c for c in at_k if c.results[k] is not None and (not c.stopped or c.top > k)]
            expected = min(self.rung_size(s, i + 1), len(ok))
            ranked = sorted(ok, key=lambda c: self._rank(c, k))
            yield k, ranked[:expected], ranked[expected:]

    def next_job(self) -> Job | None:
        for b in self.opened:
            if len(self._members(b)) < self.size(self.s_of[b]):
                return Job(self.K - self.s_of[b], b)
            for k, winners, _ in self._rungs(b):  # promotions, lowest rung first
                for c in winners:
                    if c.top == k and c.running is None and not c.stopped:
                        return Job(k + 1, b, c.id)
        b = max(self.s_of, default=-1) + 1  # a new bracket, the next in the cycle
        s = self.cycle[len(self.opened) % len(self.cycle)]
        return Job(self.K - s, b)

    def stop_waiting(self) -> list[int]:
        """Configurations whose rung is complete and that were not among the best of it."""
        out = []
        for b in self.opened:
            for k, _, losers in self._rungs(b):
                for c in losers:
                    if not c.stopped and c.top == k and c.running is None:
                        c.stopped = True
                        out.append(c.id)
        return out

    def keep_checkpoints(self, extra: int) -> set[int]:
        """Every waiting configuration: a synchronous rung stops its losers as soon as it is
        complete (their checkpoints go then), and any other may still be promoted."""
        return {c.id for c in self.waiting()}


class OneRung(Scheduler):
    """Full fidelity, the one-rung case: every configuration runs once, at its only rung, and
    a free worker always starts a new one."""

    name = "one-rung"

    def __init__(self):
        super().__init__([1.0], 1)

    def next_job(self) -> Job | None:
        return Job(0, 0)

    def keep_checkpoints(self, extra: int) -> set[int]:
        return set()


def make_scheduler(name: str, rung_resources: list[float], eta: int) -> Scheduler:
    if name == "asha":
        return ASHA(rung_resources, eta)
    if name == "hyperband":
        return Hyperband(rung_resources, eta)
    if name == "sh":
        return Hyperband(rung_resources, eta, brackets=[len(rung_resources) - 1])
    raise ValueError(f"unknown scheduler {name!r}{did_you_mean(name, SCHEDULERS)}; choose one of {', '.join(SCHEDULERS)}")
