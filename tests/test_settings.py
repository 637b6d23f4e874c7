"""The VAE_* settings: read by pydantic-settings, refused by name when invalid, and
docs/CONFIGURATION.md's table is exactly the settings' own (python -m service.config prints it)."""

from __future__ import annotations

import pytest

from service.config import Settings, load_settings, markdown_table
from tests.conftest import ROOT


def test_environment_sets_and_validates(monkeypatch):
    monkeypatch.setenv("VAE_MAX_ITEMS", "7")
    monkeypatch.setenv("VAE_GRPC", "false")
    st = load_settings()
    assert st.max_items == 7 and st.grpc is False and st.model_name == "digits"
    monkeypatch.setenv("VAE_MAX_ITEMS", "0")
    with pytest.raises(SystemExit, match="max_items"):
        load_settings()


def test_documented_table_is_the_settings():
    doc = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert markdown_table() in doc, "docs/CONFIGURATION.md's table is stale: paste the " \
        "output of `python -m service.config`"
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name}: every setting says what it does"


def test_limit_errors_name_settings_that_exist():
    """Every limit message says which VAE_MAX_* setting raises it: the names must be real."""
    import re

    root = ROOT / "service"
    text = "".join(p.read_text() for p in root.rglob("*.py"))
    named = set(re.findall(r"\(VAE_(MAX_[A-Z_]+)\)", text))
    named |= {f"MAX_{f.upper()}" for f in re.findall(r'_limit\("(\w+)"', text)}
    assert {"MAX_N", "MAX_ITEMS", "MAX_SCORE_ROWS", "MAX_BODY_BYTES"} <= named
    for name in named:
        assert name.lower() in Settings.model_fields, name
