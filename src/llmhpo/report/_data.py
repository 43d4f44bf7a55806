"""A study as the report reads it: each trial's outcome, scalar metrics, curves, timings
and times, the best so far, the base model's score; no plotting here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from llmhpo._metrics import adapter_dir, numbers, split_metrics, timings
from llmhpo.goals import metric_value

#: metrics that count work or resources rather than measure the model (tables, not panels)
BOOKKEEPING = {"train_steps", "steps_trained_now", "resource_trained", "train_tokens", "train_tokens_per_s",
               "peak_memory_mb", "peak_rss_mb", "peak_gpu_memory_mb", "peak_gpu_reserved_mb", "diverged_step"}

#: a trial's peak memory (MiB) -> its column's name; peak_memory_mb (the GPU peak on CUDA, the
#: resident set's on the CPU) only for studies recorded before the others existed
MEMORY = {"peak_gpu_memory_mb": "peak GPU MiB", "peak_gpu_reserved_mb": "GPU reserved MiB",
          "peak_rss_mb": "peak RSS MiB"}
LEGACY_MEMORY = {"peak_memory_mb": "peak MiB"}


def memory_columns(trials: list["Trial"]) -> dict[str, str]:
    """The peak-memory metrics these trials recorded -> their column names."""
    found = {k: v for k, v in MEMORY.items() if any(k in t.scalars for t in trials)}
    return found or {k: v for k, v in LEGACY_MEMORY.items() if any(k in t.scalars for t in trials)}


def is_bookkeeping(metric: str) -> bool:
    """Counts of work or resources, lm-eval's sample counts and scoring times: for tables, not panels."""
    return metric in BOOKKEEPING or metric.split("/")[-1] in ("sample_len", "sample_count", "requests",
                                                               "seconds_per_request")


#: timing keys -> the phase of a trial they belong to (the rest of the trial's time is "other")
PHASES = {"setup": "load", "model_load": "load", "load": "load", "train": "train", "val_loss": "evaluate",
          "eval": "evaluate", "evaluate": "evaluate"}


@dataclass
class Trial:
    number: int
    state: str  # COMPLETE | FAIL | PRUNED | WAITING | RUNNING | INTERRUPTED
    value: float | None  # COMPLETE trials only
    params: dict[str, Any]
    scalars: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> [(step, y)]
    texts: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    error: str | None = None
    start: float | None = None  # epoch seconds
    end: float | None = None
    rungs: dict[int, float] = field(default_factory=dict)  # multi-fidelity: resource step -> score
    adapter: str | None = None
    values: list[float] | None = None  # several objectives: one per objective (COMPLETE trials)
    constraints: list[float] | None = None  # <= 0 where a constraint holds; None: none

    @property
    def feasible(self) -> bool:
        return self.constraints is None or all(c <= 0 for c in self.constraints)

    @property
    def last_score(self) -> float | None:
        """The score at the highest rung reached (multi-fidelity), else the value."""
        if self.value is not None:
            return self.value
        return self.rungs[max(self.rungs)] if self.rungs else None

    @property
    def compute_s(self) -> float:
        """Seconds a worker spent on the trial: the executor's measure ("trial"), or the
        objective's own ("total", or its phases summed), whichever is longest."""
        t = self.timings
        phases = sum(v for k, v in t.items() if k in PHASES and not (k == "model_load" and "setup" in t))
        measured = max(t.get("trial", 0.0), t.get("total", 0.0), phases)
        if measured == 0.0 and self.start is not None and self.end is not None:
            return max(self.end - self.start, 0.0)
        return measured

    def phases(self) -> dict[str, float]:
        """Seconds per phase: load, train, evaluate, other (what the objective did not split)."""
        out = {"load": 0.0, "train": 0.0, "evaluate": 0.0}
        t = dict(self.timings)
        if "setup" in t and "model_load" in t:  # setup includes the model's loading
            t.pop("model_load")
        for k, v in t.items():
            if k in PHASES:
                out[PHASES[k]] += v
        out["other"] = max(self.compute_s - sum(out.values()), 0.0)
        return out


def _warm_line(study) -> str | None:
    """The earlier studies a study was warm-started from (``llmhpo.transfer``), in one line."""
    from llmhpo.transfer import describe

    record = study.warm_start()
    return None if not record else describe(record)


@dataclass
class StudyData:
    name: str
    optimizer: str
    objective: str  # a few words (``kind.describe``)
    direction: str
    metric: str  # what the value is: the y axis' name
    space: Any  # llmhpo.space.SearchSpace
    trials: list[Trial]
    base: dict[str, float] = field(default_factory=dict)  # the base model's metrics, when scored
    #: the study's ``importances(method)`` (Optuna's fANOVA / PED-ANOVA); None: not read from a study
    importance: Callable[[str], dict[str, float]] | None = None
    accelerator: str = "CPU"  # "GPU" when trials ran on GPUs: compute is GPU-hours
    fidelity: Any = None
    #: several objectives: (metric, direction) each, and the base model's value of each (None: not scored)
    objectives: list[tuple[str, str]] = field(default_factory=list)
    base_values: list[float | None] | None = None
    warm_start: str | None = None  # [warm_start] from: the earlier studies used, in one line

    # ------------------------------------------------------------------ reading
    @classmethod
    def of(cls, study) -> "StudyData":
        """From a ``llmhpo.study.Study``."""
        cfg = study.config
        trials, gpu = [], False
        for r in study.records():
            metrics = r.attrs.get("metrics") or {}
            scalars, curves, texts = split_metrics(metrics)
            worker = r.attrs.get("worker") or {}
            start = r.start if r.start is not None else worker.get("start")
            end = r.end if r.end is not None else worker.get("end")
            state = "INTERRUPTED" if r.interrupted else r.state
            trials.append(Trial(r.number, state, r.value if r.state == "COMPLETE" else None, dict(r.params),
                                scalars, curves, texts, timings(r), r.attrs.get("error"), start, end,
                                {int(k): float(v) for k, v in (r.intermediate or {}).items()}, adapter_dir(r),
                                r.values if r.state == "COMPLETE" else None, r.constraints))
            gpu = gpu or str(texts.get("device", "")).startswith("cuda") or bool(worker.get("device"))
        scored = study.base()
        base = numbers((scored or (None, {}))[1])
        objectives = [(o.metric, o.direction) for o in cfg.study.objectives]
        base_values = None if scored is None or not objectives else \
            [metric_value(m, scored[0], scored[1], None) for m, _ in objectives]
        return cls(cfg.study.name, cfg.optimizer, cfg.kind.describe(cfg.objective), cfg.study.direction,
                   objectives[0][0] if objectives else metric_name(cfg), cfg.space,
                   sorted(trials, key=lambda t: t.number), base, study.importances, "GPU" if gpu else "CPU",
                   cfg.fidelity, objectives, base_values, _warm_line(study))

    # ------------------------------------------------------------------ views
    @property
    def label(self) -> str:
        return f"{self.name} ({self.optimizer})"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def of_state(self, *states: str) -> list[Trial]:
        return [t for t in self.trials if t.state in states]

    @property
    def complete(self) -> list[Trial]:
        return self.of_state("COMPLETE")

    @property
    def failed(self) -> list[Trial]:
        return self.of_state("FAIL")

    def best(self) -> Trial | None:
        """The best complete trial; None with several objectives, which have no one best
        (their figures mark the Pareto set instead)."""
        done = self.complete if not self.objectives else []
        if not done:
            return None
        sign = -1.0 if self.maximize else 1.0
        return min(done, key=lambda t: (sign * t.value, t.number))

    def ranked(self) -> list[Trial]:
        sign = -1.0 if self.maximize else 1.0
        return sorted(self.complete, key=lambda t: (sign * t.value, t.number))

    @property
    def base_score(self) -> float | None:
        """The base model's value of the objective metric, when it was scored."""
        return self.base.get(self.metric)

    @property
    def t0(self) -> float | None:
        """When the first trial started (epoch seconds)."""
        starts = [t.start for t in self.trials if t.start is not None]
        return min(starts) if starts else None

    def best_so_far(self, by: str = "number") -> tuple[list[float], list[float]]:
        """(x, best) at each complete trial: x is the trial number (``by="number"``), seconds
        since the first trial started (``"time"``), or the compute seconds spent by the trials
        finished so far (``"compute"``)."""
        t0 = self.t0 or 0.0
        finished = [t for t in self.trials if t.state not in ("RUNNING", "WAITING", "INTERRUPTED")]
        if by != "number":
            finished = sorted(finished, key=lambda t: (t.end is None, t.end or 0.0, t.number))
        xs, ys, best, spent = [], [], None, 0.0
        for t in finished:
            spent += t.compute_s
            if t.value is None:
                continue
            if best is None or self.better(t.value, best):
                best = t.value
            xs.append(float(t.number) if by == "number" else (t.end or t0) - t0 if by == "time" else spent)
            ys.append(best)
        return xs, ys

    def monitored(self) -> list[str]:
        """Scalar metrics worth a panel each: measured on complete trials, not the objective
        itself, not counts of work or resources, not constant."""
        seen: dict[str, list[float]] = {}
        for t in self.complete:
            for k, v in t.scalars.items():
                seen.setdefault(k, []).append(v)
        out = [k for k, vs in seen.items() if k != self.metric and not is_bookkeeping(k)
               and (len(set(vs)) > 1 or (k in self.base and self.base[k] != vs[0]))]
        # the benchmarks' metrics (task/metric) first, then losses, then the rest
        return sorted(out, key=lambda k: (0 if "/" in k else 1 if "loss" in k else 2, k))

    def compute_hours(self) -> float:
        return sum(t.compute_s for t in self.trials) / 3600

    def wall_hours(self) -> float:
        ends = [t.end for t in self.trials if t.end is not None]
        return (max(ends) - self.t0) / 3600 if ends and self.t0 is not None else 0.0

    def phase_totals(self) -> dict[str, float]:
        out = {"load": 0.0, "train": 0.0, "evaluate": 0.0, "other": 0.0}
        for t in self.trials:
            if t.state == "RUNNING":
                continue
            for k, v in t.phases().items():
                out[k] += v
        return out

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("COMPLETE", "FAIL", "PRUNED", "WAITING", "RUNNING", "INTERRUPTED")}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def metric_name(cfg) -> str:
    """What the objective's value measures, for axis labels: the evaluation metric of a
    fine-tuning study, the metric a Python objective names, the function's value."""
    spec = cfg.objective
    ev = getattr(spec, "eval", None)
    if isinstance(getattr(ev, "objective", None), str):
        return ev.objective
    if isinstance(getattr(spec, "metric", None), str):
        return spec.metric
    fn = getattr(spec, "function", None)
    fn = fn if isinstance(fn, str) else getattr(spec, "name", None)
    if isinstance(fn, str):
        return f"{fn}(x)"
    return "objective"


def spans_decades(values, decades: float = 2.0) -> bool:
    """True when positive values span at least ``decades`` powers of ten (a log axis then)."""
    vs = [v for v in values if v is not None and math.isfinite(v)]
    if len(vs) < 2 or min(vs) <= 0:
        return False
    return math.log10(max(vs) / min(vs)) >= decades
