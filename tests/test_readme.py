"""The README's examples run as written: its Python blocks are executed, the files it names
(``# my_study.py`` as a block's first line) are written and used by the commands that
follow, every TOML block is a valid study config, a block that names an example file is that
file, and its layout section names the package's modules."""

import os
import re
import subprocess
import sys
from pathlib import Path

from llmhpo.config import Config, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
NAMED = re.compile(r"^# ([\w.-]+\.(?:py|toml))\s*$")


EXAMPLE = re.compile(r"^# (examples/[\w.-]+\.toml)\b")
FRAGMENT = re.compile(r"^# add to (a study|the study above)")


def blocks():
    return [(lang, body) for lang, body in BLOCK.findall(README.read_text())]


def toml_blocks():
    return [body for lang, body in blocks() if lang == "toml"]


def test_readme_code_blocks_run_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               + os.environ.get("PATH", ""))
    ran = 0
    for i, (lang, body) in enumerate(blocks()):
        first = body.splitlines()[0]
        named = NAMED.match(first)
        if lang == "toml":
            path = tmp_path / (named.group(1) if named else f"block{i}.toml")
            path.write_text(body)
            if "[objective]" in body:  # a whole study (others are additions to one, shown as such)
                load_config(path)
        elif lang == "python":
            path = tmp_path / (named.group(1) if named else f"block{i}.py")
            path.write_text(body)
            r = subprocess.run([sys.executable, path.name], cwd=tmp_path, capture_output=True, text=True,
                               timeout=600, env=env)
            assert r.returncode == 0, f"README python block {i} failed:\n{r.stderr[-3000:]}"
            ran += 1
        elif lang == "bash":
            # the commands that use the files the README itself wrote
            for line in body.splitlines():
                cmd = line.split("#")[0].strip()
                if cmd.startswith("llmhpo ") and all((tmp_path / a).exists() for a in cmd.split()[2:3]):
                    r = subprocess.run(cmd.split(), cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
                    assert r.returncode == 0, f"README command {cmd!r} failed:\n{r.stderr[-3000:]}"
                    ran += 1
    assert ran >= 4
    assert (tmp_path / "my_study.db").exists() and (tmp_path / "my-study.db").exists()


def test_layout_names_every_module_and_nothing_else():
    """The "## Layout" section names each module and subpackage of src/llmhpo (``name.py``,
    ``name/``), and every such name it gives exists."""
    section = README.read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+\.py|\w+/)`", section))
    src = README.parent / "src" / "llmhpo"
    present = {p.name for p in src.glob("*.py") if p.name != "__init__.py"}
    present |= {p.name + "/" for p in src.iterdir() if (p / "__init__.py").is_file()}
    assert not present - named, f"the README's layout does not name {sorted(present - named)}"
    assert not named - present, f"the README's layout names {sorted(named - present)}, which do not exist"


def test_toml_blocks_that_name_an_example_are_that_example():
    """A TOML block whose first line names a file under examples/ shows that whole file (not
    an excerpt): both parse to the same tables; comments and layout may differ. Blocks that
    name another file (``# my_study.toml``) are files the README itself creates, checked by
    running the commands that use them (``test_readme_code_blocks_run_as_written``)."""
    shown = 0
    for body in toml_blocks():
        named = EXAMPLE.match(body)
        if named:
            path = README.parent / named.group(1)
            assert path.is_file(), f"the README shows {named.group(1)}, which does not exist"
            assert tomllib.loads(body) == tomllib.loads(path.read_text()), f"the README's {path.name} is not the file"
            shown += 1
    assert shown >= 1


def _merge(study: dict, fragment: dict) -> dict:
    """The study with the fragment added: its tables key by key, anything else replaced."""
    out = dict(study)
    for key, value in fragment.items():
        out[key] = {**study.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def test_toml_fragments_are_valid_in_the_studies_they_name():
    """A block that begins "# add to a study" or "# add to the study above" is a fragment:
    merged into each study it names (the example shown last above it, any examples/ file
    named in its first line; examples/branin-soo.toml when it names none), every key of it
    is valid and the result loads as a study."""
    above, checked = None, 0
    for body in toml_blocks():
        first = body.splitlines()[0]
        if EXAMPLE.match(body):
            above = README.parent / EXAMPLE.match(body).group(1)
        if not FRAGMENT.match(first):
            continue
        fragment = tomllib.loads(body)
        targets = [README.parent / p for p in re.findall(r"examples/[\w.-]+\.toml", first)]
        if FRAGMENT.match(first).group(1) == "the study above":
            assert above is not None, f"{first!r}: no study is shown above it"
            targets.append(above)
        for path in targets or [README.parent / "examples" / "branin-soo.toml"]:
            study = _merge(tomllib.loads(path.read_text()), fragment)
            Config.from_dict(study, path.stem, path.parent)
            checked += 1
    assert checked >= 4
