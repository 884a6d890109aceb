"""The architecture's rules (pyproject.toml's import-linter contracts, docs/architecture.md) hold."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MLFLOW_DOORS = "Only tracking, registry and serving talk to MLflow"
LAYERS = "Layers: each imports only those below it"


def lint(root: Path) -> tuple[int, str]:
    """lint-imports on the faceattr package under `root` (this checkout, or a copy), with its pyproject's
    contracts: the exit code and the report."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(root)}   # the copy's faceattr, not the installed checkout
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def verdicts(report: str) -> dict[str, str]:
    """{contract name: KEPT or BROKEN} from lint-imports' summary lines."""
    return {name.strip(): verdict for name, verdict in re.findall(r"^(.+?) ?(KEPT|BROKEN)$", report, re.M)}


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "faceattr", tmp_path / "faceattr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_import_contracts_are_kept():
    """Only tracking/registry/serving import mlflow; data and models never reach tracking; no cycles; layers."""
    code, report = lint(REPO)
    assert code == 0 and "0 broken" in report, report


def test_mlflow_outside_the_three_doors_breaks_the_contracts(tmp_path):
    """The mlflow ban is an allow-list: an existing module no contract names (workflow) that starts
    importing mlflow breaks it, and so does a new top-level module, which the exhaustive layers contract
    also refuses until it is given a layer."""
    root = copy_of_package(tmp_path)
    with open(root / "faceattr" / "workflow.py", "a") as fh:
        fh.write("\nimport mlflow  # noqa: E402\n")
    code, report = lint(root)
    assert code != 0 and verdicts(report)[MLFLOW_DOORS] == "BROKEN", report
    assert "faceattr.workflow -> mlflow" in report, report
    assert verdicts(report)[LAYERS] == "KEPT", report

    shutil.copy(REPO / "faceattr" / "workflow.py", root / "faceattr" / "workflow.py")
    (root / "faceattr" / "newstep.py").write_text("import mlflow\n")
    code, report = lint(root)
    assert code != 0 and verdicts(report)[MLFLOW_DOORS] == "BROKEN", report
    assert "faceattr.newstep -> mlflow" in report, report
    assert verdicts(report)[LAYERS] == "BROKEN" and "faceattr.newstep" in report, report


def test_no_module_branches_on_a_task_name():
    """What differs between tasks lives in faceattr/tasks.py: nowhere else compares `task` to a name."""
    branches = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
                for path in (REPO / "faceattr").rglob("*.py") if path.name != "tasks.py"
                for i, line in enumerate(path.read_text().splitlines(), 1)
                if '["task"] ==' in line or '["task"] !=' in line or "task ==" in line]
    assert not branches, "\n".join(branches)
