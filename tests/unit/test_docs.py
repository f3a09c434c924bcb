"""The documentation generated from code is the documentation shipped."""

from __future__ import annotations

from ghostream.config import Settings, _documented_paths
from ghostream.docs import README, render


def test_every_setting_says_what_it_does() -> None:
    undocumented = [".".join(path) for path, doc in _documented_paths(Settings) if not doc.strip()]
    assert undocumented == []


def test_readme_tables_match_the_code() -> None:
    text = README.read_text()
    assert render(text) == text, "run `python -m ghostream.docs` and commit README.md"
