"""/docs.json is a valid OpenAPI 3.1 document (checked by a 3.1 validator), every operation
is described, and every answer of the real server, in every output_format, for errors and
for the V2 routes too, validates against the schema the document declares for it."""

from __future__ import annotations

import copy

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from conftest import Server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def served(trained):
    with Server(trained["repository"]) as srv, httpx.Client(base_url=srv.url,
                                                             timeout=60) as http:
        yield http, http.get("/docs.json").json()


def _check(doc: dict, path: str, method: str, status: int, answer: object) -> None:
    """The answer validates against the schema the document gives (path, method, status)."""
    content = doc["paths"][path][method]["responses"][str(status)]["content"]
    schema = {**content["application/json"]["schema"], "components": doc["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(answer), key=str)
    assert not errors, f"{method.upper()} {path} {status}: {errors[0].message[:300]} at " \
                       f"{list(errors[0].absolute_path)}"


def test_the_document_is_valid_openapi_3_1(served):
    _, doc = served
    assert doc["openapi"] == "3.1.0"
    validate_openapi(copy.deepcopy(doc))


def test_every_operation_is_described_with_typed_answers(served):
    _, doc = served
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert op.get("summary") and op.get("description"), (method, path)
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None:  # never a bare object: a generator gets the fields
                    assert schema != {"type": "object"}, (method, path, status)


def _example(doc: dict, path: str) -> dict:
    return copy.deepcopy(doc["paths"][path]["post"]["requestBody"]["content"][
        "application/json"]["example"])


IMAGE_OPS = ["/decode", "/sample", "/interpolate", "/reconstruct", "/neighbors"]


@pytest.mark.parametrize("path", ["/encode", "/decode", "/sample", "/interpolate",
                                  "/reconstruct", "/score", "/compare", "/neighbors",
                                  "/latent_map", "/model"])
def test_every_answer_matches_its_schema(served, path):
    http, doc = served
    bodies = [_example(doc, path)]
    if path in IMAGE_OPS:
        bodies = [{**bodies[0], "output_format": f} for f in ("json", "npy", "png")]
    if path == "/encode":
        bodies.append({**bodies[0], "samples": 0})
    if path == "/latent_map":
        bodies.append({"projection": "pca", "with_mu": True})
    for body in bodies:
        r = http.post(path, json=body)
        assert r.status_code == 200, (path, body, r.text)
        _check(doc, path, "post", 200, r.json())


def test_error_answers_match_the_error_schema(served):
    http, doc = served
    x = np.full((1, 1, 8, 8), 0.5).tolist()
    cases = [("/encode", {"inputs": x, "sampels": 2}, 400),  # unknown field (with detail)
             ("/sample", {"n": 100000}, 400),
             ("/encode", {"inputs": x, "model": "nope"}, 404),
             ("/encode", {"inputs": x, "version": 99}, 404)]
    for path, body, status in cases:
        r = http.post(path, json=body)
        assert r.status_code == status, (path, r.text)
        _check(doc, path, "post", status, r.json())


def test_v2_answers_match_their_schemas(served):
    http, doc = served
    _check(doc, "/v2", "get", 200, http.get("/v2").json())
    _check(doc, "/v2/models/{model}", "get", 200, http.get("/v2/models/encoder").json())
    _check(doc, "/v2/models/{model}", "get", 200, http.get("/v2/models/sample").json())
    _check(doc, "/v2/repository/index", "post", 200, http.post("/v2/repository/index").json())
    r = http.post("/v2/repository/models/digits.encoder/load", json={})
    _check(doc, "/v2/repository/models/{model}/load", "post", 200, r.json())
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    r = http.post("/v2/models/decoder/infer", json={**example, "id": "a"})
    assert r.status_code == 200, r.text
    _check(doc, "/v2/models/{model}/infer", "post", 200, r.json())
    r = http.post("/v2/models/decoder/infer", json={"inputs": []})
    _check(doc, "/v2/models/{model}/infer", "post", r.status_code, r.json())
