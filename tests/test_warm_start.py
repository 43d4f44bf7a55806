"""Warm starts from earlier studies ([warm_start] from): mapping by name, refusals, direction,
use = "data" (outside the budget) and use = "design" (evaluated first), resume."""

import numpy as np
import optuna
import pytest

import llmhpo
from llmhpo.config import Config, load_config
from llmhpo.errors import ConfigError, SetupProblems
from llmhpo.optimizers import make_optimizer
from llmhpo.study import Study
from llmhpo.transfer import load

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "rank": {"type": "int", "low": 2, "high": 32, "default": 8}}


def f(lr, rank):
    return (np.log10(lr) + 2.5) ** 2 + ((rank - 16) / 16) ** 2


def earlier(path, name="old", direction="minimize", rows=()):
    """A plain Optuna study (not made by llmhpo) with complete trials: rows of (params, value)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(storage=f"sqlite:///{path}", study_name=name, direction=direction)
    for params, value in rows:
        dists = {k: FloatDistribution(-1e9, 1e9) if isinstance(v, float) else CategoricalDistribution([v])
                 for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return study


def config(tmp_path, warm, optimizer="bo", **extra):
    raw = {"study": {"name": "new"}, "budget": {"trials": 4}, "optimizer": {"name": optimizer, **extra},
           "objective": {"type": "python", "target": "x:y"}, "space": SPACE, "warm_start": warm}
    return Config.from_dict(raw, base_dir=tmp_path)


def branin_toml(optimizer: str, first: str, warm: str) -> str:
    """A study file over branin: its first variable's table ``first``, then x1, then ``warm``."""
    return (f'[study]\nname = "new"\n[budget]\ntrials = 2\n[optimizer]\nname = "{optimizer}"\n'
            '[objective]\ntype = "function"\nname = "branin"\n' + first
            + '[space.x1]\ntype = "float"\nlow = 0.0\nhigh = 15.0\n' + warm)


ROWS = [({"lr": 3e-3, "rank": 16.0, "dropout": 0.1}, 0.1),   # dropout: not in this space, ignored
        ({"lr": 1e-2}, 0.5),                                   # rank missing: its default, 8
        ({"lr": 0.5, "rank": 4.0}, 0.05),                      # lr outside 1e-4..1e-1: skipped
        ({"lr": 1e-3, "rank": 30.0}, 0.3)]


def test_maps_names_ignores_unknown_variables_fills_defaults_and_skips_outside(tmp_path):
    earlier(tmp_path / "a.db", rows=ROWS)
    cfg = config(tmp_path, {"from": ["a.db"], "study": "old"})
    src = load(cfg).sources[0]
    assert src.skipped == 1 and src.numbers == [0, 1, 3]
    assert [cfg.space.decode(x) for x in src.X] == [{"lr": pytest.approx(3e-3), "rank": 16},
                                                     {"lr": pytest.approx(1e-2), "rank": 8},
                                                     {"lr": pytest.approx(1e-3), "rank": 30}]
    assert src.y.tolist() == [0.1, 0.5, 0.3]


def test_a_maximised_source_is_turned_into_lower_is_better(tmp_path):
    earlier(tmp_path / "a.db", direction="maximize", rows=ROWS)
    src = load(config(tmp_path, {"from": [{"storage": "a.db", "study": "old"}]})).sources[0]
    assert src.y.tolist() == [-0.1, -0.5, -0.3]
    # the best of a maximised source is its highest value
    best = load(config(tmp_path, {"from": [{"storage": "a.db", "study": "old"}], "use": "design"})).design(1)
    assert "trial 1 of" in best[0][1]


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.db does not exist"):
        load(config(tmp_path, {"from": ["missing.db"]}))
    earlier(tmp_path / "a.db", rows=ROWS)
    with pytest.raises(ConfigError, match=r"no study 'nope' in .*it holds: old"):
        load(config(tmp_path, {"from": ["a.db"], "study": "nope"}))
    earlier(tmp_path / "b.db", rows=[({"depth": 3.0}, 1.0)])
    with pytest.raises(ConfigError, match="no variable in common"):
        load(config(tmp_path, {"from": ["b.db"], "study": "old"}))
    earlier(tmp_path / "c.db", rows=[({"lr": 0.5}, 1.0)])
    with pytest.raises(ConfigError, match=r"no complete trial that fits this space \(1 outside"):
        load(config(tmp_path, {"from": ["c.db"], "study": "old"}))


@pytest.mark.parametrize("warm, match", [
    ({"from": ["a.db"], "use": "prior"}, "use = 'prior' must be"),
    ({"from": []}, "non-empty list"),
    ({"from": ["a.db"], "max_trials": 0}, "max_trials = 0 must be at least 1"),
    ({"from": [3]}, "must be a storage URL"),
    ({"use": "data"}, "need from ="),
    ({"from": ["a.db"], "sources": 1}, "unknown key 'sources'"),
])
def test_bad_tables_are_refused_at_parse(tmp_path, warm, match):
    with pytest.raises(ConfigError, match=match):
        config(tmp_path, warm)


def test_the_table_form_round_trips_and_the_array_form_is_unchanged(tmp_path):
    cfg = config(tmp_path, {"from": ["a.db", {"storage": "b.db", "study": "x"}], "study": "old", "use": "design",
                            "max_trials": 20, "configs": [{"lr": 1e-3}]})
    assert cfg.warm_start == ({"lr": 1e-3},)
    assert cfg.warm_from.sources == (("a.db", "old"), ("b.db", "x"))
    again = Config.from_dict(cfg.to_dict())
    assert again.warm_from == cfg.warm_from and again.search_hash() == cfg.search_hash()
    plain = config(tmp_path, [{"lr": 1e-3}])
    assert plain.warm_from is None and plain.to_dict()["warm_start"] == [{"lr": 1e-3}]


def test_data_steers_bo_without_trials_or_budget(tmp_path):
    rng = np.random.default_rng(0)
    rows = [({"lr": float(10 ** rng.uniform(-4, -1)), "rank": float(rng.integers(2, 33))}, 0.0) for _ in range(30)]
    rows = [(p, float(f(p["lr"], p["rank"]))) for p, _ in rows]
    earlier(tmp_path / "a.db", rows=rows)
    db = f"sqlite:///{tmp_path / 'new.db'}"
    llmhpo.optimize(f, SPACE, trials=4, optimizer="bo", optimizer_options={"n_init": 4}, storage=db,
                    study_name="new", quiet=True,
                    warm_start_from={"from": [str(tmp_path / "a.db")], "study": "old"})
    study = Study.load(db, "new")
    records = study.records()
    assert len(records) == 4 and study.counts()["COMPLETE"] == 4  # the 30 earlier trials are no trials here
    assert study.warm_start()["sources"][0]["trials"] == 30
    from typer.testing import CliRunner

    from llmhpo.cli import app
    from llmhpo.report._data import StudyData
    from llmhpo.report._page import facts

    line = dict(facts(StudyData.of(study)))["warm start from"]
    assert line.startswith("study 'old' in sqlite:///") and line.endswith(': 30 trials (use = "data")')
    assert "warm start from study 'old'" in " ".join(CliRunner().invoke(app, ["status", db]).output.split())
    # 2 initial points (n_init // 2), then the GP of the earlier trials: near their optimum
    model = records[2].params
    assert abs(np.log10(model["lr"]) + 2.5) < 0.5 and abs(model["rank"] - 16) <= 6


def test_prior_data_are_not_part_of_the_optimizer_state():
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 10, {"n_init": 4})
    opt.set_earlier([(np.random.default_rng(1).random((5, 2)), np.arange(5.0))])
    assert len(opt.design) == 2 and "prior" not in opt.state_dict()["own"]
    assert make_optimizer("soo", 2, np.random.default_rng(0), 10, {}).takes_earlier is False


def test_design_evaluates_the_best_first_and_resumes_without_repeats(tmp_path):
    rows = [({"lr": 10 ** (-1 - 0.3 * i), "rank": float(2 + 3 * i)}, float(9 - i)) for i in range(9)]
    earlier(tmp_path / "a.db", rows=rows)
    db = f"sqlite:///{tmp_path / 'new.db'}"
    common = dict(optimizer="random", storage=db, study_name="new", quiet=True,
                  warm_start_from={"from": [str(tmp_path / "a.db")], "study": "old", "use": "design"})
    llmhpo.optimize(f, SPACE, trials=3, **common)
    first = [r.params["rank"] for r in Study.load(db, "new").records()]
    assert first == [26, 23, 20]  # the earlier study's best three (values 1, 2, 3), best first
    llmhpo.optimize(f, SPACE, trials=9, **common)  # resumed with a larger budget
    records = Study.load(db, "new").records()
    ranks = [r.params["rank"] for r in records]
    assert len(records) == 9 and ranks[:5] == [26, 23, 20, 17, 14]  # k = 5 for random
    points = {tuple(sorted(r.params.items())) for r in records}
    assert len(points) == 9  # nothing evaluated twice


def test_data_resumes_as_one_run(tmp_path):
    rng = np.random.default_rng(0)
    rows = [({"lr": float(10 ** rng.uniform(-4, -1)), "rank": float(rng.integers(2, 33))}, float(rng.random()))
            for _ in range(12)]
    earlier(tmp_path / "a.db", rows=rows)
    runs = {}
    for name, budgets in (("once", [5]), ("twice", [3, 5])):
        db = f"sqlite:///{tmp_path / (name + '.db')}"
        for trials in budgets:
            llmhpo.optimize(f, SPACE, trials=trials, optimizer="bo", optimizer_options={"n_init": 4}, storage=db,
                            study_name="new", quiet=True, seed=1,
                            warm_start_from={"from": [str(tmp_path / "a.db")], "study": "old"})
        runs[name] = [r.params for r in Study.load(db, "new").records()]
    assert runs["twice"] == runs["once"]


def test_data_with_an_optimizer_without_a_model_says_so(tmp_path, capsys):
    earlier(tmp_path / "a.db", rows=ROWS)
    llmhpo.optimize(f, SPACE, trials=2, optimizer="soo", storage=f"sqlite:///{tmp_path / 'n.db'}",
                    study_name="new",
                    warm_start_from={"from": [{"storage": str(tmp_path / "a.db"), "study": "old"}], "use": "data"},
                    progress=False)
    out = capsys.readouterr().out
    assert "3 trials (1 outside this space, skipped)" in out
    assert "no effect on optimizer 'soo'" in out


def test_a_toml_file_reads_sources_relative_to_its_folder(tmp_path):
    earlier(tmp_path / "a.db", rows=ROWS)
    (tmp_path / "s.toml").write_text(branin_toml("random", '[space.x0]\ntype = "float"\nlow = -5.0\nhigh = 10.0\n',
                                                 '[warm_start]\nfrom = [{ storage = "a.db", study = "old" }]\n'
                                                 'use = "design"\n'))
    cfg = load_config(tmp_path / "s.toml")
    with pytest.raises(ConfigError, match="no variable in common"):
        load(cfg)


def test_use_defaults_to_data_for_bo_and_design_otherwise(tmp_path):
    assert config(tmp_path, {"from": ["a.db"]}).warm_from.use == "data"
    assert config(tmp_path, {"from": ["a.db"]}, optimizer="soo").warm_from.use == "design"


def test_check_reports_a_missing_earlier_study_with_the_other_problems(tmp_path):
    from llmhpo.preflight import preflight

    earlier(tmp_path / "a.db", rows=ROWS)
    cfg = config(tmp_path, {"from": ["a.db"], "study": "old"}, optimizer="random")
    cfg = Config.from_dict({**cfg.to_dict(), "objective": {"type": "function", "name": "branin"},
                            "space": {"lr": SPACE["lr"], "x1": {"type": "float", "low": 0.0, "high": 15.0}}})
    assert any("study 'old'" in line and "3 trials" in line for line in preflight(cfg))
    bad = Config.from_dict({**cfg.to_dict(), "warm_start": {"from": ["missing.db"]}})
    with pytest.raises(ConfigError, match="does not exist"):
        preflight(bad)
    (tmp_path / "empty.db").write_bytes(b"")
    two = Config.from_dict({**cfg.to_dict(), "warm_start": {"from": ["missing.db", "a.db", "empty.db"],
                                                           "study": "nope"}})
    with pytest.raises(SetupProblems) as e:  # every earlier study's problem, not only the first
        preflight(two)
    assert [p.split(":")[0] for p in e.value.problems] == ["[warm_start] from"] * 3
    assert "does not exist" in e.value.problems[0] and "no study 'nope'" in e.value.problems[1]


def test_run_with_a_missing_earlier_study_stops_with_one_line_and_creates_nothing(tmp_path):
    import subprocess
    import sys

    (tmp_path / "s.toml").write_text('[study]\nname = "s"\n[budget]\ntrials = 2\n[optimizer]\nname = "random"\n'
                                     '[objective]\ntype = "function"\nname = "branin"\n'
                                     '[warm_start]\nfrom = ["earlier.db"]\n')
    r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "run", "s.toml"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "earlier.db does not exist" in lines[0]
    assert not list(tmp_path.glob("s.db"))


def test_a_value_of_a_variable_inactive_here_is_ignored(tmp_path):
    """A source that searched a variable unconditionally, a space that makes it conditional:
    the trials where it would be inactive keep their other values (not skipped)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="old")
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "sched": CategoricalDistribution(["constant", "linear"]),
             "warmup": FloatDistribution(0.0, 0.2)}
    for params, value in (({"lr": 3e-3, "sched": "constant", "warmup": 0.1}, 0.2),
                          ({"lr": 1e-3, "sched": "linear", "warmup": 0.05}, 0.4)):
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    space = {"lr": SPACE["lr"], "sched": {"type": "categorical", "choices": ["constant", "linear"]},
             "warmup": {"type": "float", "low": 0.0, "high": 0.2, "when": {"sched": ["linear"]}}}
    cfg = Config.from_dict({**config(tmp_path, {"from": ["a.db"], "study": "old"}).to_dict(), "space": space},
                           base_dir=tmp_path)
    src = load(cfg).sources[0]
    assert src.skipped == 0 and src.numbers == [0, 1]
    assert [cfg.space.decode(x) for x in src.X] == [{"lr": pytest.approx(3e-3), "sched": "constant"},
                                                     {"lr": pytest.approx(1e-3), "sched": "linear",
                                                      "warmup": pytest.approx(0.05)}]


def test_a_source_that_is_not_a_study_file_is_named_as_a_warm_start_problem_and_nothing_is_made(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database")
    (tmp_path / "runs").mkdir()
    for source, match in (("notes.txt", r"\[warm_start\] from: .*notes.txt is not a SQLite database; choose "
                                        r"another \[warm_start\] from path"),
                          ("runs", r"runs is a folder"),
                          ("journal://gone.log", r"gone.log does not exist.*four slashes"),
                          ("journal:///gone.log", r"gone.log does not exist")):
        with pytest.raises(ConfigError, match=match):
            load(config(tmp_path, {"from": [source], "study": "old"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "runs"]


def test_journal_paths_read_as_sqlite_paths(tmp_path):
    from llmhpo._tables import storage_url
    from llmhpo.storage import file_path

    for url, path in (("journal:///s.log", tmp_path / "s.log"), ("journal://s.log", tmp_path / "s.log"),
                      (f"journal:///{tmp_path}/s.log", tmp_path / "s.log"),
                      ("sqlite:///s.db", tmp_path / "s.db"), ("s.db", tmp_path / "s.db")):
        assert file_path(storage_url(url, tmp_path)) == path, url
    assert file_path("postgresql://u@h/db") is None and file_path("sqlite:///:memory:") is None


def test_check_says_that_data_has_no_effect_without_a_model(tmp_path):
    from typer.testing import CliRunner

    from llmhpo.cli import app

    earlier(tmp_path / "a.db", rows=ROWS)
    (tmp_path / "s.toml").write_text(branin_toml("soo", '[space.lr]\ntype = "float"\nlow = 0.0001\nhigh = 0.1\nlog = true\n',
                                                 '[warm_start]\nfrom = [{ storage = "a.db", study = "old" }]\n'
                                                 'use = "data"\n'))
    r = CliRunner().invoke(app, ["check", str(tmp_path / "s.toml")])
    assert r.exit_code == 0, r.output
    assert "no effect on optimizer 'soo'" in " ".join(r.output.split())


def test_both_forms_of_the_table_in_one_file_name_the_fix(tmp_path):
    (tmp_path / "w.toml").write_text('[study]\nname = "w"\n[objective]\ntype = "function"\nname = "branin"\n'
                                     '[optimizer]\nname = "bo"\n[budget]\ntrials = 3\n[[warm_start]]\nx0 = 1.0\n'
                                     'x1 = 2.0\n[warm_start]\nfrom = ["a.db"]\n')
    with pytest.raises(ConfigError, match=r"not valid TOML: .*give the configurations as \[warm_start\] configs"):
        load_config(tmp_path / "w.toml")


def test_an_unnamed_source_holding_one_study_reads_that_study(tmp_path):
    earlier(tmp_path / "a.db", rows=ROWS)  # its one study is "old", this one "new"
    src = load(config(tmp_path, {"from": ["a.db"]})).sources[0]
    assert "study 'old'" in src.label and len(src.y) == 3
    earlier(tmp_path / "a.db", name="other", rows=ROWS)  # two studies: the name must match or be given
    with pytest.raises(ConfigError, match=r"no study 'new' in .*it holds: old, other"):
        load(config(tmp_path, {"from": ["a.db"]}))


def test_python_takes_one_storage_a_path_or_storage_study_pairs(tmp_path):
    from llmhpo.api import _warm_table

    earlier(tmp_path / "a.db", rows=ROWS)
    assert _warm_table((), str(tmp_path / "a.db")) == {"from": [str(tmp_path / "a.db")]}
    assert _warm_table((), tmp_path / "a.db") == {"from": [str(tmp_path / "a.db")]}
    assert _warm_table((), [(tmp_path / "a.db", "old")]) == {"from": [{"storage": str(tmp_path / "a.db"),
                                                                      "study": "old"}]}
    # a tuple is one (storage, study) pair, not two storages; several sources go in a list
    assert _warm_table((), (tmp_path / "a.db", "old")) == _warm_table((), [(tmp_path / "a.db", "old")])
    assert _warm_table((), {"storage": str(tmp_path / "a.db"), "study": "old"}) == \
        _warm_table((), [(tmp_path / "a.db", "old")])  # one source as a dict, as in a list
    a, b = str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"
    assert _warm_table((), (a, b)) == {"from": [a, b]}  # two storages, not a storage and a study
    assert _warm_table((), ((a, "old"), (b, "x"))) == {"from": [{"storage": a, "study": "old"},
                                                                {"storage": b, "study": "x"}]}
    with pytest.raises(ConfigError, match="is not an earlier study"):
        _warm_table((), [(a, 3)])
    with pytest.raises(ConfigError, match="warm_start_from: 3 is not an earlier study"):
        _warm_table((), [3])
    summary = llmhpo.optimize(f, SPACE, trials=2, optimizer="random", quiet=True, warm_start_from=tmp_path / "a.db")
    assert summary.complete == 2


def test_a_source_is_read_without_a_byte_of_it_changing(tmp_path):
    """A plain Optuna SQLite file stays in its journal mode: no WAL switch, no -wal file."""
    import hashlib

    earlier(tmp_path / "a.db", rows=ROWS)
    before = hashlib.sha256((tmp_path / "a.db").read_bytes()).hexdigest()
    load(config(tmp_path, {"from": ["a.db"]}))
    assert hashlib.sha256((tmp_path / "a.db").read_bytes()).hexdigest() == before
    assert not (tmp_path / "a.db-wal").exists()


def test_a_float_source_maps_onto_an_integer_and_a_source_without_finite_trials_says_so(tmp_path):
    earlier(tmp_path / "a.db", rows=[({"lr": 1e-3, "rank": 11.37}, 0.2), ({"lr": 1e-3, "rank": 31.6}, 0.1)])
    src = load(config(tmp_path, {"from": ["a.db"]})).sources[0]
    assert len(src.y) == 2 and src.skipped == 0  # ranks 11 and 32
    study = earlier(tmp_path / "b.db")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL))
    with pytest.raises(ConfigError, match="has no complete trial with a finite value; remove it"):
        load(config(tmp_path, {"from": ["b.db"]}))


def test_the_only_study_of_this_studys_own_storage_is_an_earlier_one(tmp_path):
    earlier(tmp_path / "shared.db", rows=ROWS)  # holds "old" only; this study is "new", in the same file
    cfg = config(tmp_path, {"from": ["shared.db"]})
    cfg = Config.from_dict({**cfg.to_dict(), "study": {"name": "new", "storage": "shared.db"}}, base_dir=tmp_path)
    assert "study 'old'" in load(cfg).sources[0].label
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'shared.db'}", study_name="new")  # as after a first run
    assert "study 'old'" in load(cfg).sources[0].label  # a resume still reads the other one
    cfg = Config.from_dict({**cfg.to_dict(), "study": {"name": "old", "storage": "shared.db"},
                            "warm_start": {"from": [{"storage": "shared.db", "study": "old"}]}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="is this study itself"):
        load(cfg)


def test_a_study_resumes_without_a_source_gone_since_it_began(tmp_path, capsys):
    earlier(tmp_path / "a.db", rows=ROWS)
    db = f"sqlite:///{tmp_path / 'new.db'}"
    common = dict(optimizer="random", storage=db, study_name="new",
                  warm_start_from={"from": [str(tmp_path / "a.db")], "use": "design"})
    llmhpo.optimize(f, SPACE, trials=2, quiet=True, **common)
    (tmp_path / "a.db").unlink()
    llmhpo.optimize(f, SPACE, trials=4, **common)
    assert f"{tmp_path / 'a.db'}: gone since the study began (no longer read; what it queued before still runs)" in capsys.readouterr().out
    assert len(Study.load(db, "new").records()) == 4
    with pytest.raises(ConfigError, match="does not exist"):  # a new study still needs its sources
        llmhpo.optimize(f, SPACE, trials=2, quiet=True, **dict(common, study_name="other"))
    with pytest.raises(ConfigError, match="does not exist"):  # and so does one started again
        llmhpo.optimize(f, SPACE, trials=2, quiet=True, overwrite=True, **common)
    assert len(Study.load(db, "new").records()) == 4  # refused before anything was replaced
    from llmhpo.transfer import describe  # with use = "data" a source queued nothing

    line = describe({"use": "data", "sources": [], "gone": ["a.db"]})
    assert "a.db: gone since the study began (no longer read)" in line and "queued" not in line


def test_a_source_with_another_schema_gets_no_table_it_lacks(tmp_path):
    import sqlite3

    earlier(tmp_path / "a.db", rows=ROWS)
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("DROP TABLE trial_heartbeats")
    con.commit()
    con.close()
    before = (tmp_path / "a.db").read_bytes()
    load(config(tmp_path, {"from": ["a.db"]}))
    assert (tmp_path / "a.db").read_bytes() == before


def test_a_source_trial_whose_value_is_not_finite_is_skipped_and_counted(tmp_path):
    from llmhpo.transfer import describe

    earlier(tmp_path / "a.db", rows=[*ROWS, ({"lr": 1e-2, "rank": 8.0}, float("inf"))])  # a diverged run
    t = load(config(tmp_path, {"from": ["a.db"]}))
    assert len(t.sources[0].y) == 3 and np.isfinite(t.sources[0].y).all()
    line = describe(t.record())
    assert "3 trials (1 outside this space, 1 with a value that is not finite, skipped)" in line
