"""The README's examples run as written: its Python blocks are executed, the files it names
(``# my_study.py`` as a block's first line) are written and used by the commands that
follow, and every TOML block is a valid study config."""

import os
import re
import subprocess
import sys
from pathlib import Path

from llmhpo.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
NAMED = re.compile(r"^# ([\w.-]+\.(?:py|toml))\s*$")


def blocks():
    return [(lang, body) for lang, body in BLOCK.findall(README.read_text())]


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
