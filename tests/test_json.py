"""Values made JSON-safe: the one-way ``jsonable`` gives strict JSON for anything a trial reports."""

import json
import math

import numpy as np

from llmhpo._json import decode, encode, jsonable


def test_jsonable_gives_strict_json_for_what_trials_report():
    v = jsonable({"nan": math.nan, "inf": -math.inf, 1: np.float32(0.5), "arr": np.arange(3), "set": {"b", "a"},
                  "tuple": (1, None, True), "obj": object})
    text = json.dumps(v, allow_nan=False)  # strict: no NaN / Infinity tokens
    assert json.loads(text) == {"nan": "nan", "inf": "-inf", "1": 0.5, "arr": [0, 1, 2], "set": ["a", "b"],
                                "tuple": [1, None, True], "obj": str(object)}


def test_encode_round_trips_optimiser_state_exactly():
    state = {"x": np.zeros((0, 3)), "best": math.inf, "n": np.int64(4)}
    back = decode(json.loads(json.dumps(encode(state), allow_nan=False)))
    assert back["x"].shape == (0, 3) and back["best"] == math.inf and back["n"] == 4
