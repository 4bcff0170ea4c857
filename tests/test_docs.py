"""Docs that are generated from code stay in step with it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))


def test_api_reference_is_current():
    from gen_api import render

    assert (ROOT / "docs" / "api.md").read_text() == render(), "run: python docs/gen_api.py"


def test_readme_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "python -m experiments reproduce" in text and "python -m pytest -q" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
