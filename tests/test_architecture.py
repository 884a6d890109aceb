"""The architecture's rules (pyproject.toml's import-linter contracts, docs/architecture.md) hold."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    """Only tracking/registry/serving import mlflow; data and models never reach tracking; no cycles; layers."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout + done.stderr


def test_no_module_branches_on_a_task_name():
    """What differs between tasks lives in faceattr/tasks.py: nowhere else compares `task` to a name."""
    branches = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
                for path in (REPO / "faceattr").rglob("*.py") if path.name != "tasks.py"
                for i, line in enumerate(path.read_text().splitlines(), 1)
                if '["task"] ==' in line or '["task"] !=' in line or "task ==" in line]
    assert not branches, "\n".join(branches)
