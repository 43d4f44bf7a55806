"""What each objective kind knows and the config asks it: search-space presets, whether its
fidelity resource counts whole units, and which params a fidelity sets itself."""

import json

import pytest

from llmhpo.config import Config
from llmhpo.errors import ConfigError
from llmhpo.objectives.finetune.presets import preset
from llmhpo.space import Int


def raw(kind: str, **tables) -> dict:
    out = {"budget": {"trials": 3}, "optimizer": {"name": "random"}, "objective": {"type": kind}}
    if kind == "function":
        out["objective"]["name"] = "branin"
    return {**out, **tables}


def test_paper_preset_is_table_3_1():
    s = preset("paper")
    assert s.names == ["learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay"]
    lr, r, a, d, wd = s.variables
    assert (lr.low, lr.high, lr.log) == (1e-10, 1e-1, True)
    assert (r.low, r.high, isinstance(r, Int)) == (2, 32, True)
    assert (a.low, a.high, isinstance(a, Int)) == (16, 64, True)
    assert (d.low, d.high, d.log) == (0.0, 0.5, False)
    assert (wd.low, wd.high, wd.log) == (1e-3, 1e-1, True)


def test_a_finetune_study_asks_its_kind_for_the_paper_preset_and_adds_to_it():
    cfg = Config.from_dict(raw("finetune", space={"preset": "paper",
                                                  "batch_size": {"type": "int", "low": 2, "high": 8}}))
    assert cfg.space.names == preset("paper").names + ["batch_size"]


def test_a_kind_without_presets_says_so_and_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"\[space\] preset = 'paper': a function objective has no presets"):
        Config.from_dict(raw("function", space={"preset": "paper"}))
    with pytest.raises(ConfigError, match=r"preset = 'papr' is unknown \(did you mean 'paper'\?\); available: paper"):
        Config.from_dict(raw("finetune", space={"preset": "papr"}))


@pytest.mark.parametrize("kind, resource, lo, hi, integer, rungs", [
    ("finetune", "epochs", 0.1, 0.9, False, [0.1, 0.3, 0.9]),  # a rung may end part-way through an epoch
    ("finetune", "max_steps", 4, 36, True, [4.0, 12.0, 36.0]),
    ("function", "steps", 5, 50, True, [6.0, 17.0, 50.0]),  # 50/9 and 50/3, rounded to whole steps
])
def test_whether_rungs_are_whole_numbers_is_the_kinds_answer(kind, resource, lo, hi, integer, rungs):
    cfg = Config.from_dict(raw(kind, fidelity={"resource": resource, "min": lo, "max": hi}))
    assert cfg.fidelity.integer is integer
    assert cfg.fidelity.rungs() == pytest.approx(rungs)
    assert "integer" not in cfg.to_dict()["fidelity"]  # the kind's to say, not a TOML key
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))  # as a study stores it
    assert again.fidelity == cfg.fidelity and again.search_hash() == cfg.search_hash()


@pytest.mark.parametrize("resource, variable", [("max_steps", "max_steps"), ("max_steps", "epochs"),
                                                ("epochs", "max_steps")])
def test_a_searched_variable_the_fidelity_sets_is_a_config_error(resource, variable):
    space = {"preset": "paper", variable: {"type": "int", "low": 1, "high": 40}}
    hi = 36 if resource == "max_steps" else 0.9
    with pytest.raises(ConfigError) as e:
        Config.from_dict(raw("finetune", space=space, fidelity={"resource": resource, "min": hi / 9, "max": hi}))
    assert f"[space.{variable}] is searched, but [fidelity] resource = '{resource}' sets {variable}" in str(e.value)
    assert "\n" not in str(e.value)
