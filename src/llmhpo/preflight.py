"""The checks before a study's first trial, shared by ``llmhpo check`` and ``run``: the
storage ``run`` would open (looked at read-only: nothing is created), the optimiser's options
on the real space, and everything the objective needs, with every problem reported at once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from llmhpo.config import Config
from llmhpo.errors import LlmhpoError, SetupProblems, StudyError
from llmhpo.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from llmhpo.priors import UnitPrior


def build_optimizer(config: Config) -> Optimizer:
    """The study's optimiser, seeded from the study seed; a bad option value raises ConfigError."""
    # one stream per component, spawned from the study seed (optimiser first); snap: integer and
    # categorical variables are proposed, modelled and de-duplicated as the configuration evaluated
    opt_seq = np.random.SeedSequence(config.study.seed).spawn(2)[0]
    options = OPTIMIZERS[config.optimizer].fit_options(config.optimizer_options, config.space)
    return make_optimizer(config.optimizer, config.space.dim, np.random.default_rng(opt_seq),
                          config.budget.trials, options, snap=config.space.snap,
                          n_objectives=len(config.study.directions), prior=UnitPrior.from_space(config.space))


def preflight(config: Config, found: tuple[str, ...] = (), overwrite: bool = False,
              stored: bool = False) -> list[str]:
    """Lines describing what was found. A single problem is raised as it came (a
    ConfigError stays one); several as SetupProblems listing them all, one line each.
    found: problems found before (``check``'s memory estimate), reported with the others;
    overwrite: as ``run --overwrite`` (a stored study to be replaced, its earlier studies all
    needed again); stored: compare a study stored under this name with this configuration
    (``check``; a run compares when it opens the study, not twice)."""
    lines, errors = [], [SetupProblems(list(found))] if found else []
    try:
        lines.append(f"storage: {check_storage(config.study.storage)}")
        if stored:
            from llmhpo.study import stored_difference

            if (changed := stored_difference(config)) is not None:  # what the run would refuse
                if overwrite:
                    lines.append(f"study '{config.study.name}' is stored with another configuration: "
                                 "--overwrite replaces it")
                else:
                    errors.append(StudyError(changed))
    except LlmhpoError as e:
        errors.append(e)
    if config.warm_from is not None:  # earlier studies: their storages, names and trials
        from llmhpo.transfer import load

        sources: list = []  # every earlier study's problem, not only the first
        try:
            transfer = load(config, sources, overwrite=overwrite)
            if not sources:
                lines.append(transfer.line())
        except LlmhpoError as e:
            sources.append(e)
        errors += sources
    try:  # the optimiser's options on the real space (per-dimension lists, a grid's levels)
        build_optimizer(config)
    except LlmhpoError as e:
        errors.append(e)
    try:
        lines += config.kind.preflight(config.objective, config.space, config.runner.devices, config.fidelity,
                                       remote=runs_elsewhere(config))
    except LlmhpoError as e:
        errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SetupProblems([p for e in errors for p in getattr(e, "problems", None) or [_first_line(e)]])
    return lines


def runs_elsewhere(config: Config) -> bool:
    """Whether the trials may run on other machines than this one: a Ray cluster joined by
    address (or RAY_ADDRESS), whose GPUs the workers check at their set-up instead."""
    address = config.runner.address if config.runner.address is not None else os.environ.get("RAY_ADDRESS")
    return config.runner.executor == "ray" and address not in (None, "", "local")


def check_storage(url: str | None) -> str:
    """What ``open_storage(url)`` would find, without creating or changing anything;
    raises StudyError naming the problem and the fix."""
    if url is None:
        return "in memory (nothing is kept)"
    from llmhpo.storage import check_sqlite_file, file_path

    if url.startswith("journal://"):
        return _check_file(file_path(url), "journal file")
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = file_path(url)
        check_sqlite_file(path)  # a folder, an empty file, not SQLite, another program's tables
        return _check_file(path, "SQLite file")
    return _check_database(url)


def _check_file(path: Path, kind: str) -> str:
    if path.is_dir():
        raise StudyError(f"storage path {path} is a folder; give a file in it, e.g. {path}/study.db")
    if path.exists():
        return f"{path} ({kind}, exists)"
    if not path.parent.is_dir():
        from llmhpo.storage import PATHS_HINT

        raise StudyError(f"the folder of storage {path} does not exist; create it or fix [study] storage "
                         f"({PATHS_HINT})")
    return f"{path} (new {kind}, made by the first run)"


def _check_database(url: str) -> str:
    """A database server's URL: a dialect SQLAlchemy knows, its driver installed, and the
    server answering (connecting creates nothing; Optuna's tables are made by `run`)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = sa.engine.make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise StudyError(f"[study] storage = {url!r} is not a storage URL llmhpo knows; use sqlite:///file.db, "
                         "postgresql://user@host/db, mysql://user@host/db or journal:///path/file.log") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        module = e.name or parsed.drivername
        raise StudyError(f"[study] storage = {url!r} needs the database driver {module!r}, which is not installed; "
                         f"pip install {_PIP.get(module, module)}") from None
    timeout = {"connect_timeout": 5} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    engine = sa.create_engine(parsed, connect_args=timeout)
    try:
        with engine.connect():
            pass
    except Exception as e:
        raise StudyError(f"cannot connect to storage {parsed.render_as_string(hide_password=True)}: "
                         f"{_first_line(e)}; check the URL, the server and your access") from None
    finally:
        engine.dispose()
    return f"{parsed.render_as_string(hide_password=True)} (database server answers)"


# drivers whose pip package has another name than their module
_PIP = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "psycopg": "psycopg[binary]"}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def check_memory(config: Config, gpu_memory: tuple[float, ...] = ()) -> tuple[list[str], list[str]]:
    """(lines, problems) of the memory estimate of a fine-tuning study's most demanding trial
    against each GPU: ``gpu_memory`` (GiB) when given, else [runner] devices (or GPU 0) as
    CUDA reports them; with neither (or on Ray), the estimate alone. Other objectives: nothing."""
    from llmhpo.objectives.finetune.config import FinetuneConfig

    if not isinstance(config.objective, FinetuneConfig):
        return [], []
    from llmhpo.objectives.finetune.memory import GIB, memory_check

    # a Ray cluster's GPUs are not this machine's: there, only --gpu-memory is checked
    gpus = [("", int(g * GIB)) for g in gpu_memory] or ([] if config.runner.executor == "ray"
                                                       else _gpus(config.runner.devices))
    return memory_check(config.objective.resolved(), config.space, gpus, config.runner.gpus_per_trial or 1.0)


def _gpus(devices: tuple[str, ...]) -> list[tuple[str, int]]:
    """("GPU <id> (<name>", total bytes) of the devices CUDA shows here (GPU 0 without devices)."""
    import torch

    if not torch.cuda.is_available():
        return []
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    kinds: dict[tuple[str, int], list[str]] = {}  # GPUs of one model and size: one line for them all
    for d in devices or ("0",):
        if d.isdigit():
            found = props[int(d)] if int(d) < len(props) else None
        else:  # a GPU-<uuid> as `nvidia-smi -L` writes it; MIG slices are not matched
            found = next((p for p in props if d.startswith("GPU-") and str(getattr(p, "uuid", "")) in d), None)
        if found is not None:
            kinds.setdefault((found.name, int(found.total_memory)), []).append(d)
    return [(f"GPU{'s' * (len(ids) > 1)} {', '.join(ids)} ({name}", total) for (name, total), ids in kinds.items()]
