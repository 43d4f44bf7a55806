"""How long `llmhpo status` takes on a finished study: import time (python -X importtime,
the sum of the top-level imports) and wall time of the whole command, median of 5 runs.
usage: python benchmarks/status_time.py"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = '[study]\nname = "s"\n[budget]\ntrials = 20\n[optimizer]\nname = "bo"\n[objective]\ntype = "function"\n'


def import_seconds(args: list[str], cwd: str) -> float:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmhpo.cli", *args], cwd=cwd,
                       capture_output=True, text=True, check=True)
    total = 0
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  "):  # top level: its cumulative time covers its children
                total += int(cumulative)
    return total / 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "s.toml").write_text(STUDY)
        subprocess.run([sys.executable, "-m", "llmhpo.cli", "run", "s.toml", "--no-progress"], cwd=d,
                       capture_output=True, check=True)
        imports, walls = [], []
        for _ in range(5):
            imports.append(import_seconds(["status", "s.toml"], d))
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "s.toml"], cwd=d, capture_output=True,
                               text=True, check=True)
            walls.append(time.time() - t0)
            torch = subprocess.run([sys.executable, "-c", "import sys; from llmhpo.cli import app\n"
                                    "try:\n    app(['status', 's.toml'])\nexcept SystemExit:\n    pass\n"
                                    "print('torch' in sys.modules, file=sys.stderr)"],
                                   cwd=d, capture_output=True, text=True).stderr.strip().splitlines()[-1]
    print(json.dumps({"import_s_median": round(statistics.median(imports), 3),
                      "wall_s_median": round(statistics.median(walls), 3),
                      "torch_imported": torch == "True", "cpu_count": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()
