"""The names faceattr writes into MLflow are defined once (faceattr/names.py); the logged model's record
(faceattr/record.py) is read in one place."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# tag, param and artifact names as string literals (faceattr.*, MLflow's own run name and parent tags,
# the logged model's files, the run's artifacts) and role values compared with the role tag
LITERAL = re.compile(r"""["'](faceattr\.[a-z_]+|mlflow\.(runName|parentRunId|user|source\.[a-z]+|note\.content)|"""
                     r"""spec\.json|record\.json|model\.keras|gender_model\.keras|collapse_check\.json|config\.json|"""
                     r"""slices\.json|promotion\.json|report\.html|plots/[a-z_]+\.png|gender_source|collapsed|"""
                     r"""leans_on_gender)["']|(ROLE\)? ?(==|:|=) ?|ROLE = )"[a-z]+\"""")


def test_names_are_written_once():
    """Outside faceattr/names.py no module spells a tag, param or artifact name: a renamed tag cannot
    leave a reader behind."""
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in (REPO / "faceattr").rglob("*.py") if path.name != "names.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if LITERAL.search(line)]
    assert not found, "\n".join(found)
