import numpy as np
import pytest

from llmhpo.errors import ConfigError
from llmhpo.objectives.finetune.presets import paper_space  # a realistic five-variable space
from llmhpo.space import Categorical, Float, Int, SearchSpace


def test_ints_and_categoricals_round_trip_exactly():
    s = SearchSpace([Int("r", 2, 32), Int("n", 1, 1000, log=True), Categorical("c", ("a", "b", "c"))])
    for r in range(2, 33):
        for n in (1, 2, 7, 999, 1000):
            for c in "abc":
                p = {"r": r, "n": n, "c": c}
                assert s.decode(s.encode(p)) == p


def test_log_scale_is_linear_in_the_exponent():
    v = Float("lr", 1e-10, 1e-1, log=True)
    assert v.from_unit(0) == pytest.approx(1e-10)
    assert v.from_unit(1) == pytest.approx(1e-1)
    assert v.from_unit(1 / 3) == pytest.approx(1e-7)
    assert v.to_unit(1e-4) == pytest.approx(6 / 9)


def test_relax_and_round_gives_each_integer_an_equal_share():
    v = Int("r", 2, 32)
    us = np.linspace(0, 1, 31 * 1000, endpoint=False) + 0.5 / (31 * 1000)
    counts = np.bincount([v.from_unit(u) for u in us])[2:]
    assert counts.min() == counts.max() == 1000


def test_decode_clips_and_keeps_types():
    s = paper_space()
    p = s.decode(np.array([1.2, -0.1, 0.5, 0.5, 0.5]))
    assert p["learning_rate"] == pytest.approx(0.1)
    assert p["lora_rank"] == 2 and isinstance(p["lora_alpha"], int)


@pytest.mark.parametrize("spec, message", [
    ({"x": {"type": "float", "low": 1, "high": 0}}, "variable 'x': low=1.0 must be below high=0.0"),
    ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, "variable 'x': log=true needs low > 0"),
    ({"x": {"type": "int", "low": 0, "high": 4, "log": True}}, "variable 'x': log=true needs low >= 1"),
    ({"x": {"type": "categorical", "choices": []}}, "variable 'x': choices must be a non-empty list"),
    ({"x": {"type": "complex", "low": 0, "high": 1}}, "variable 'x': unknown type 'complex'"),
    ({"x": {"type": "int", "low": 0.5, "high": 4}}, "variable 'x': low=0.5 must be an integer"),
    ({"x": {"type": "float", "low": 0, "high": 1, "step": 2}}, "variable 'x': unknown key 'step'"),
    ({"x": {"type": "float", "high": 1}}, "variable 'x': missing key 'low'"),
])
def test_bad_definitions_name_the_variable_and_the_fix(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace.from_dict(spec)


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="'x' is defined twice"):
        SearchSpace([Float("x", 0, 1), Int("x", 0, 3)])


def test_encode_partial_fills_defaults_and_refuses_unknown():
    s = paper_space()
    x = s.encode({"learning_rate": 2e-4, "lora_rank": 8, "lora_alpha": 16}, fill_defaults=True)
    p = s.decode(x)
    assert p["lora_rank"] == 8 and p["lora_alpha"] == 16 and p["learning_rate"] == pytest.approx(2e-4)
    assert p["lora_dropout"] == pytest.approx(0.05) and p["weight_decay"] == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="unknown parameter 'lora_r'"):
        s.encode({"lora_r": 8}, fill_defaults=True)
    with pytest.raises(ConfigError, match="'lora_rank'=40 is not int in"):
        s.encode({"lora_rank": 40}, fill_defaults=True)


def test_space_dict_round_trip():
    s = paper_space()
    assert SearchSpace.from_dict(s.to_dict()) == s


def test_snap_is_the_point_of_the_evaluated_configuration():
    space = SearchSpace([Float("lr", 1e-5, 1e-1, log=True), Int("r", 2, 32), Categorical("opt", ("adam", "sgd"))])
    x = np.array([0.3141, 0.4321, 0.9])
    s = space.snap(x)
    assert s[0] == x[0]  # a float is its own configuration
    np.testing.assert_allclose(s, space.encode(space.decode(x)))
    assert space.decode(s) == space.decode(x)
    np.testing.assert_array_equal(space.snap(s), s)  # idempotent
    # two points in one integer cell snap to the same point
    a, b = space.snap(np.array([0.5, 0.40, 0.2])), space.snap(np.array([0.5, 0.41, 0.3]))
    np.testing.assert_array_equal(a, b)
