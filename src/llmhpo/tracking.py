"""Finished trials also logged to the tracking tools a study's ``[logging]`` table names:
MLflow (any tracking URI; an ``mlflow.db`` beside the TOML by default), TensorBoard event
files, and Weights & Biases (offline unless told otherwise).

One run per trial: its params, every scalar metric, each per-step curve (the training
loss) as a step series, the timings, the adapter's folder, the state and the failure
reason. The runner calls ``open_trackers(config, study)`` once, ``log_trial(record)`` for
each trial that ends (COMPLETE, FAIL or PRUNED) and ``close()`` at the end. Each tool
knows what it was given before (MLflow's runs carry the study's search hash and trial
number; TensorBoard and W&B keep a ledger file), so a resumed study logs every trial once.
A tracking tool that fails while the study runs prints one warning and is left out; it
never stops the study.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from llmhpo._metrics import adapter_dir, split_metrics, timings
from llmhpo.errors import ConfigError

_RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}


@dataclass
class TrialLog:
    """What every tracking tool gets of one finished trial."""

    study: str
    number: int
    state: str  # COMPLETE | FAIL | PRUNED
    value: float | None  # the objective (PRUNED: the last rung's score)
    params: dict[str, Any]
    scalars: dict[str, float]
    curves: dict[str, list[tuple[float, float]]]  # name -> [(step, value)]
    timings: dict[str, float]  # seconds
    texts: dict[str, str] = field(default_factory=dict)
    adapter: str | None = None
    error: str | None = None
    start: float | None = None  # epoch seconds
    end: float | None = None

    @classmethod
    def of(cls, study: str, record) -> "TrialLog":
        """From a ``llmhpo.study.TrialRecord``."""
        scalars, curves, texts = split_metrics(record.attrs.get("metrics") or {})
        value = record.value
        if record.intermediate:  # multi-fidelity: the score at each rung, by resource
            curves["objective_by_resource"] = sorted((float(s), float(v)) for s, v in record.intermediate.items())
            if value is None and record.state == "PRUNED":
                value = float(record.intermediate[max(record.intermediate)])
        worker = record.attrs.get("worker") or {}
        texts.pop("adapter_dir", None)
        return cls(study, record.number, record.state, value, dict(record.params), scalars, curves, timings(record),
                   texts, adapter_dir(record), record.attrs.get("error"), worker.get("start"), worker.get("end"))


class Tracker:
    """The tracking tools of one run. ``log_trial`` once per finished trial, ``close`` at the end."""

    def __init__(self, study: str, backends: list, search_hash: str = ""):
        self.study, self.backends, self.search_hash = study, list(backends), search_hash
        for b in self.backends:
            if not hasattr(b, "already_logged"):
                b.already_logged = set()

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    @property
    def logged(self) -> set[tuple[int, str]]:
        """(trial number, state) logged to every tool, by this run or an earlier one."""
        sets = [b.already_logged for b in self.backends]
        return set.intersection(*sets) if sets else set()

    def log_trial(self, record) -> None:
        """Log a finished trial (a ``TrialRecord``) to each tool that does not have it in that
        state yet (from this run or an earlier one); RUNNING and WAITING trials are skipped."""
        if record.state not in _RUN_STATUS or record.attrs.get("interrupted"):
            return
        key = (record.number, record.state)
        todo = [b for b in self.backends if key not in b.already_logged]
        if not todo:
            return
        trial = TrialLog.of(self.study, record)
        for b in todo:
            try:
                b.log(trial)
                b.already_logged.add(key)
            except Exception as e:  # a tracking server down must not stop the study
                print(f"llmhpo: {b.name} logging failed ({type(e).__name__}: {e}); "
                      f"trials are no longer logged to {b.name}", file=sys.stderr)
                self.backends.remove(b)

    def log_trials(self, records: Iterable) -> None:
        for r in records:
            self.log_trial(r)

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as e:
                print(f"llmhpo: closing {b.name} failed ({type(e).__name__}: {e})", file=sys.stderr)
        self.backends = []

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_trackers(config, study=None) -> Tracker | None:
    """The tracking tools ``config.logging`` asks for, or None when it asks for none.

    study: the ``llmhpo.study.Study`` being run (optional). Raises ConfigError when a tool's
    package is missing or its store cannot be opened, before any trial runs.
    """
    lg = getattr(config, "logging", None)
    if lg is None or not lg.enabled:
        return None
    name = config.study.name
    search_hash = config.search_hash()
    backends: list = []
    try:
        if lg.mlflow is not None:
            backends.append(_MLflow(lg.mlflow, lg.experiment or name, config, search_hash))
        if lg.tensorboard is not None:
            backends.append(_TensorBoard(Path(lg.tensorboard) / name, search_hash))
        if lg.wandb is not None:
            backends.append(_WandB(lg.experiment or name, lg.wandb, Path(config.base_dir), search_hash))
    except BaseException:
        for b in backends:
            b.close()
        raise
    return Tracker(name, backends, search_hash)


class _Ledger:
    """A JSON-lines file of the trials a tool has been given (for tools that cannot be asked):
    a resumed study logs each trial once."""

    def __init__(self, path: Path, search_hash: str):
        self.path, self.search_hash = Path(path), search_hash

    def read(self) -> set[tuple[int, str]]:
        out = set()
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if d.get("hash") == self.search_hash:
                    out.add((int(d["trial"]), str(d["state"])))
        return out

    def add(self, number: int, state: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"hash": self.search_hash, "trial": number, "state": state}) + "\n")


def _flat_config(config) -> dict[str, str]:
    """The study's settings as MLflow-style flat tags (``optimizer.name`` = ``soo``)."""
    out = {}
    d = config.to_dict()
    for section in ("study", "optimizer", "objective", "budget"):
        for k, v in (d.get(section) or {}).items():
            if v is not None and not isinstance(v, (dict, list)):
                out[f"llmhpo.{section}.{k}"] = str(v)
    return out


def _missing(tool: str, package: str) -> ConfigError:
    return ConfigError(f"[logging] {tool} needs the {package} package: pip install 'llmhpo[tracking]' "
                       f"(or pip install {package}), or remove {tool} from [logging]")


class _MLflow:
    """One MLflow run per trial, in the experiment named after the study."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, config, search_hash: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        import logging

        for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "creating tables" in a study's output
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.tags = {"llmhpo.search_hash": search_hash, **_flat_config(config)}
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                where = None
                if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the current folder
                    where = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=where)
            else:
                self.experiment_id = exp.experiment_id
            runs = self.client.search_runs([self.experiment_id],
                                           f"tags.`llmhpo.search_hash` = '{search_hash}'", max_results=50000)
        except Exception as e:
            raise ConfigError(f"[logging] mlflow = {uri!r}: cannot open the tracking store ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); check the URI") from None
        self.already_logged = {(int(r.data.tags["llmhpo.trial"]), r.data.tags.get("llmhpo.state", ""))
                               for r in runs if "llmhpo.trial" in r.data.tags}

    def log(self, t: TrialLog) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        start = int(t.start * 1000) if t.start else now
        end = int(t.end * 1000) if t.end else now
        tags = {**self.tags, "llmhpo.trial": str(t.number), "llmhpo.state": t.state}
        if t.error:
            tags["llmhpo.error"] = t.error[:8000]
        if t.adapter:
            tags["llmhpo.adapter_dir"] = t.adapter
        tags.update({f"llmhpo.{k}": v[:8000] for k, v in t.texts.items()})
        run = self.client.create_run(self.experiment_id, start_time=start, tags=tags, run_name=f"trial-{t.number}")
        rid = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in t.params.items()]
        if t.adapter:
            params.append(Param("adapter_dir", t.adapter[:6000]))
        metrics = []
        if t.value is not None:
            metrics.append(Metric("objective", t.value, end, 0))
        metrics += [Metric(k, v, end, 0) for k, v in t.scalars.items()]
        metrics += [Metric(f"time_s/{k}", v, end, 0) for k, v in t.timings.items()]
        for name, pts in t.curves.items():
            metrics += [Metric(name, y, start, int(step)) for step, y in pts]
        self.client.log_batch(rid, params=params)
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(rid, metrics=metrics[i: i + 1000])
        self.client.set_terminated(rid, _RUN_STATUS.get(t.state, "FINISHED"), end_time=end)

    def close(self) -> None:
        pass


class _TensorBoard:
    """TensorBoard event files: ``<dir>/<study>/trial-0007`` for each trial (its curves, its
    metrics and its params in the HParams tab) and ``<dir>/<study>/study`` with the objective
    and the best so far against the trial number."""

    name = "tensorboard"

    def __init__(self, folder: Path, search_hash: str = ""):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self._writer = SummaryWriter
        self.folder = Path(folder)
        self.ledger = _Ledger(self.folder / "llmhpo-logged.jsonl", search_hash)
        self.already_logged = self.ledger.read()
        self.study_writer = SummaryWriter(log_dir=str(self.folder / "study"))

    def log(self, t: TrialLog) -> None:
        w = self._writer(log_dir=str(self.folder / f"trial-{t.number:04d}"))
        try:
            for name, pts in t.curves.items():
                for step, y in pts:
                    w.add_scalar(name, y, int(step))
            w.add_text("state", t.state + (f": {t.error}" if t.error else ""))
            if t.adapter:
                w.add_text("adapter_dir", t.adapter)
            hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in t.params.items()}
            values = {**({"objective": t.value} if t.value is not None else {}), **t.scalars,
                      **{f"time_s/{k}": v for k, v in t.timings.items()}}
            w.add_hparams(hparams, {f"hparam/{k}": v for k, v in values.items()} or {"hparam/failed": 1.0},
                          run_name=".")
        finally:
            w.close()
        if t.value is not None and t.state == "COMPLETE":
            self.study_writer.add_scalar("objective", t.value, t.number)
        self.study_writer.flush()
        self.ledger.add(t.number, t.state)

    def close(self) -> None:
        self.study_writer.close()


class _WandB:
    """One Weights & Biases run per trial, grouped by study; offline by default (``wandb sync``
    uploads the runs later)."""

    name = "wandb"

    def __init__(self, project: str, mode: str, folder: Path, search_hash: str = ""):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self.wandb, self.project, self.mode, self.folder = wandb, project, mode, folder
        self.ledger = _Ledger(Path(folder) / "wandb" / f"llmhpo-logged-{project}.jsonl", search_hash)
        self.already_logged = self.ledger.read()

    def log(self, t: TrialLog) -> None:
        run = self.wandb.init(project=self.project, group=t.study, name=f"trial-{t.number}", mode=self.mode,
                              dir=str(self.folder), config={**t.params, "adapter_dir": t.adapter},
                              tags=[t.state.lower()])
        try:
            for name, pts in t.curves.items():
                for step, y in pts:
                    run.log({name: y, f"{name}_step": step})
            summary = {**({"objective": t.value} if t.value is not None else {}), **t.scalars,
                       **{f"time_s/{k}": v for k, v in t.timings.items()}, "state": t.state}
            if t.error:
                summary["error"] = t.error
            run.summary.update(summary)
        finally:
            run.finish(exit_code=0 if t.state == "COMPLETE" else 1)
        self.ledger.add(t.number, t.state)

    def close(self) -> None:
        pass


__all__ = ["Tracker", "TrialLog", "adapter_dir", "open_trackers", "split_metrics"]
