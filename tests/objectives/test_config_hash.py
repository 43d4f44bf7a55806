"""A study stored by an earlier llmhpo resumes: keys added to [model], [data], [train] and
[eval] since are left out of the stored tables while at their defaults (``ADDED_KEYS``), so
the config hash of an unchanged file stays what it was."""

from pathlib import Path

import pytest

from llmhpo.config import load_config

ROOT = Path(__file__).resolve().parents[2]

# the hashes these files had when studies were first stored from them
STORED = {
    "src/llmhpo/demo.toml": "b1a5119e8cc5c7eb",
    "examples/demo.toml": "b1a5119e8cc5c7eb",
    "examples/llama32-alpaca-hellaswag.toml": "f0bf52062ae3d81d",
    "examples/llama32-alpaca-hellaswag-asha.toml": "ec15b5c74cb7c699",
}


@pytest.mark.parametrize("path", sorted(STORED))
def test_an_unchanged_file_keeps_its_stored_hash(path):
    assert load_config(ROOT / path).search_hash() == STORED[path], (
        "a new key changed the hash of studies stored before it: list it in "
        "llmhpo.objectives.finetune.config.ADDED_KEYS")


def test_a_new_key_set_away_from_its_default_changes_the_hash(tmp_path):
    text = (ROOT / "examples/demo.toml").read_text()
    (tmp_path / "a.toml").write_text(text.replace("[eval]", "[eval]\nbase = false", 1))
    assert load_config(tmp_path / "a.toml").search_hash() != STORED["examples/demo.toml"]
