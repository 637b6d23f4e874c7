"""docs/API.md against the running service's own description of itself: every operation and
every request field in its OpenAPI document (`GET /docs.json`) is named in the page, every V2
model and tensor its metadata lists too, and every endpoint the page calls exists. A field or
operation added without a word in the reference fails here."""

from __future__ import annotations

import re

import httpx
import pytest

from conftest import ROOT, Server

DOC = (ROOT / "docs" / "API.md").read_text()


@pytest.fixture(scope="module")
def described(trained):
    with Server(trained["repository"]) as srv:
        doc = httpx.get(srv.url + "/docs.json", timeout=10).json()
        models = {m: httpx.get(f"{srv.url}/v2/models/{m}", timeout=10).json()
                  for m in ("encoder", "decoder", "sample", "interpolate")}
        yield doc, models


def _named(word: str) -> bool:
    return re.search(rf"[`\"/{{]{re.escape(word)}(?![\w-])", DOC) is not None


def test_every_operation_and_field_is_in_the_reference(described):
    doc, _ = described
    schemas = doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        if not path.startswith("/v2"):
            assert _named(path.lstrip("/")), f"docs/API.md does not name {path}"
        for op in methods.values():
            ref = op.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema", {}).get("$ref")
            if ref is None or path.startswith("/v2"):
                continue
            for field in schemas[ref.rsplit("/", 1)[1]].get("properties", {}):
                assert _named(field), f"docs/API.md does not name {path}'s field {field!r}"


def test_the_field_tables_are_the_services_own(described):
    from service.doors.api_tables import markdown_tables

    doc, _ = described
    assert markdown_tables(doc) in DOC, "docs/API.md's request fields are stale: paste the " \
        "output of `python -m service.doors.api_tables`"


def test_every_v2_model_and_tensor_is_in_the_reference(described):
    _, models = described
    for name, meta in models.items():
        assert _named(name), name
        for tensor in meta["inputs"] + meta["outputs"]:
            assert _named(tensor["name"]), f"{name}: {tensor['name']}"


def test_every_endpoint_the_reference_calls_exists(described):
    doc, _ = described
    called = set(re.findall(r"curl -s (?:-X POST )?\$HTTP(/[\w/]*)", DOC))
    assert len(called) >= 12, called
    for path in called:
        known = any(re.fullmatch(re.sub(r"\{\w+\}", r"\\w+", p), path) for p in doc["paths"])
        assert known or path in ("/livez", "/readyz", "/metrics"), path
