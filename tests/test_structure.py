"""The package's shape: layers import downwards only, no import circle, nothing outside
``objectives/`` asks which objective kind a study uses, reading a study needs no torch, and
no source file or function outgrows its line budget.

The package root ``llmhpo/__init__.py`` is the facade: it may import any module (it
re-exports the public names, ``optimize`` lazily), so it has no layer. In exchange no module
inside the package imports the root's own names (``from llmhpo import __version__``,
``import llmhpo``): they take them from the module that defines them (``llmhpo._version``).
``from llmhpo import lease`` names a submodule and counts as an import of that submodule."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "llmhpo"

# cli -> api/demo/lab -> runner/report -> preflight -> study/tracking/live -> config
# -> optimizers/objectives/executors/lease -> space/storage/_tables -> priors -> errors
LAYERS = {
    "errors": 0, "_json": 0, "_version": 0, "_format": 0, "_metrics": 0, "_progress": 0, "pareto": 0,
    "priors": 0.5,
    "goals": 1,
    "space": 1, "storage": 1, "_tables": 1, "_warm": 2, "_space_tables": 2,
    "optimizers": 2, "objectives": 2, "executors": 2, "schedulers": 2, "lease": 2,
    "config": 3,
    "study": 4, "tracking": 4, "live": 4, "transfer": 4,
    "preflight": 4.5,
    "runner": 5, "report": 5,
    "lab": 6, "api": 6, "demo": 6,
    "cli": 7,
    "__main__": 8,
}


# a file or function past these is split: a reader holds a function on one screen, a module in one sitting
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every llmhpo module ``name`` imports, at its top or inside functions."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("llmhpo")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("llmhpo"):
                continue
            for a in node.names:  # `from pkg import submodule` is an import of the submodule
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m != name}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_import_downwards_only():
    mods = modules()
    assert set(LAYERS) >= {unit(m) for m in mods if unit(m)}, "a new top-level module needs a layer here"
    bad = []
    for name, path in mods.items():
        if name == "llmhpo":
            continue  # the facade may import anything: see the module docstring
        for target in imports(name, path, set(mods)):
            a, b = unit(name), unit(target)
            if a != b and b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{name} -> {target}")
    assert not bad, "upward or sideways imports: " + ", ".join(sorted(bad))


def test_nothing_inside_the_package_imports_the_root():
    mods = modules()
    bad = sorted(name for name, path in mods.items() if name != "llmhpo" and "llmhpo" in imports(name, path, set(mods)))
    assert not bad, ("these modules import the package root; import the name from the module that defines it "
                     "(e.g. llmhpo._version): " + ", ".join(bad))


def test_no_import_circle():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_no_source_file_over_the_line_budget():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            long.append(f"{where} ({n} lines)")
    assert not long, f"source files over {MAX_FILE_LINES} lines; split them: " + ", ".join(long)


def test_no_function_over_the_line_budget():
    long = []
    for name, path in sorted(modules().items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} (line {node.lineno}, {n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines; split them: " + ", ".join(long)


def test_no_objective_kind_branch_outside_objectives():
    kinds = ("finetune", "function", "sleep", "python")
    bad = []
    for name, path in modules().items():
        if unit(name) in ("objectives", "demo"):  # the demo is the finetune demo by definition
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value in kinds for c in [node.left, *node.comparators]
            ):
                bad.append(f"{name}:{node.lineno}")
    assert not bad, "objective-kind checks outside objectives/: " + ", ".join(bad)


@pytest.mark.slow  # a study run and read through the CLI in subprocesses (~15 s)
def test_reading_a_study_imports_no_torch(tmp_path):
    (tmp_path / "s.toml").write_text('[budget]\ntrials = 3\n[optimizer]\nname = "bo"\n[objective]\ntype = "function"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "run", "s.toml", "--no-progress"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    code = ("import sys\nfrom llmhpo.cli import app\n"
            "for cmd in (['status', 's.toml'], ['best', 's.db'], ['check', 's.toml']):\n"
            "    try:\n        app(cmd)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stdout


@pytest.mark.parametrize("name", ["llmhpo", "llmhpo.space", "llmhpo.config", "llmhpo.study"])
def test_light_modules_import_without_torch(name):
    code = f"import sys, {name}\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.stdout.strip() == "False", r.stderr


def test_one_run_loop():
    """Every study, with or without [fidelity], runs through ``runner/loop.py``: it is the one
    place that waits on an executor for trials (``reevaluate.py`` waits for the few extra
    evaluations after the loop ends), and ``run`` builds exactly one ``Loop``."""
    waits = {}
    for path in (SRC / "runner").glob("*.py"):
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "wait"]
        if calls:
            waits[path.name] = len(calls)
    assert waits == {"loop.py": 1, "reevaluate.py": 1}, waits
    start = (SRC / "runner" / "start.py").read_text()
    assert start.count("Loop(") == 1
