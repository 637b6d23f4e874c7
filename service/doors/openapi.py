"""The API documents itself: the OpenAPI document at /docs.json, built from the operations'
request models (service/operations/api.py) and the V2 REST routes (service/doors/v2_rest.py),
with example requests shaped for the served model; Swagger UI at /docs (BentoML's bundled
Swagger UI assets, without third-party scripts, under the explorer's Content-Security-Policy;
our own stylesheet, ui/docs.css, instead of BentoML's, which hides the API's title)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from modelrepo.repository import MODEL_NAME_RULE
from service.doors import v2_rest
from service.errors import KINDS
from service.operations import responses as r
from service.operations import v2
from service.operations.api import OPERATIONS

SWAGGER_PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>VAE serving API</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./ui/docs.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
"""
MODEL_FIELD = ("served model (an enum of the served names when VAE_MODELS fixes them); "
               "default: the service's default model")
V2_PATH_PARAMS = {"model": "V2 model: encoder, decoder, sample, interpolate (the default "
                           "model's), or m.encoder ... for served model m",
                  "version": "an integer version of the model"}
REF = "#/components/schemas/{model}"
ERROR = {"$ref": REF.format(model="ErrorResponse")}


def _numbers(depth: int) -> dict[str, Any]:
    """A JSON array of numbers nested `depth` deep (a fixed depth, not a recursive schema:
    TypeScript's generic clients collapse recursive types)."""
    return {"type": "number"} if depth == 0 else {"type": "array", "items": _numbers(depth - 1)}


# A tensor in a request: JSON arrays ([N, Z]; images [N, prod(S)], [N, H, W] or [N, C, H, W]),
# {"npy": base64}, or for images {"png": [...]}
LATENT_ARRAYS = [{**_numbers(2), "title": "[N, Z]"}]
IMAGE_ARRAYS = [{**_numbers(d), "title": t}
                for d, t in ((4, "[N, C, H, W]"), (3, "[N, H, W]"), (2, "[N, C*H*W]"))]
V2_ANSWERS: list[type[BaseModel]] = [r.V2InferResponse, r.V2ModelMetadata, r.V2ServerMetadata,
                                     r.V2IndexEntry, r.V2Empty]
V2_DESCRIPTIONS = {
    "server_metadata": "The server's name, version and protocol extensions.",
    "live": "Liveness: 200 with an empty body while the server runs.",
    "ready": "Readiness: 200 once every model to serve has a version loaded; 503 while "
             "starting or draining.",
    "index": "Every V2 model and version the repository holds, with its state and, when it "
             "is not READY, the reason.",
    "load": "Look at the repository for the model now (new versions; with VAE_MODELS=*, a new "
            "model); 400 with the reason when its newest version is refused.",
    "model_metadata": "A V2 model's inputs and outputs, shaped for the served model (-1: any "
                      "size).",
    "model_ready": "200 when the model (that version) is loaded and warm; 400 otherwise.",
    "infer": "One inference: input tensors as JSON data or as binary after the JSON header "
             "(Inference-Header-Content-Length); outputs likewise, as asked.",
}
OPS_DESCRIPTIONS = {
    "/livez": "Liveness for probes: 200 while the process serves HTTP (also while draining).",
    "/readyz": "Readiness for probes and balancers: 200 when every named model has a warm "
               "version, 503 with the reason while starting or draining.",
    "/metrics": "Prometheus text exposition of every worker's series (docs/API.md, Metrics).",
}
# What an API call may answer besides success (the contract's error table)
API_ERRORS = sorted({k.http for name, k in KINDS.items()
                     if name not in ("client_closed", "unauthorized", "internal")})


def _responses(ok: dict[str, Any], errors: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok}
    for status in errors:
        kind = next(n for n, k in KINDS.items() if k.http == status)
        out[str(status)] = {"description": kind.replace("_", " "),
                            "content": {"application/json": {"schema": ERROR}}}
    return out


def _json_ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _typed_tensors(schema: dict[str, Any]) -> None:
    """Request fields that take a tensor (typed `Any` in the request models) get the tensor
    encodings they accept as a schema."""
    for prop in schema.get("properties", {}).values():
        text = prop.get("description", "")
        if "type" in prop or "anyOf" in prop or not text.startswith(("images", "latent")):
            continue
        images = text.startswith("images")
        prop["anyOf"] = [*(IMAGE_ARRAYS if images else LATENT_ARRAYS), _ref(r.NpyTensor)] + \
            ([_ref(r.PngImages)] if images else []) + \
            ([{"type": "null"}] if "default" in prop and prop["default"] is None else [])


def _answer_schemas() -> dict[str, Any]:
    models = [*r.RESPONSES.values(), r.ErrorResponse, *V2_ANSWERS]
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    return top["$defs"]


def document(svc: Any) -> dict[str, Any]:
    """Examples are shaped for the default model (else the first served one)."""
    registry, st = svc.registry, svc.settings
    served = [ms for ms in (registry.models.get(registry.default_name or ""),
                            *registry.models.values()) if ms is not None and ms.runtimes]
    shape, latent_dim = ((1, 8, 8), 8) if not served else \
        (tuple(served[0].get(None).shape), served[0].get(None).latent_dim)
    names = st.model_names  # fixed names: an enum; with `*` any name of the naming rule
    return _document(shape, latent_dim, st.auth_token != "" or st.auth_token_file != "",
                     None if names is None else tuple(names), registry.default_name)


def _model_field(schema: dict[str, Any], names: tuple[str, ...] | None,
                 default: str | None) -> None:
    """The request's `model`: the served names as an enum when they are fixed."""
    prop = schema.get("properties", {}).get("model")
    if prop is None:
        return
    string: dict[str, Any] = {"type": "string"}
    if names is None:
        string["pattern"] = "^" + MODEL_NAME_RULE.pattern + "$"
    else:
        string["enum"] = list(names)
    prop["anyOf"] = [string, {"type": "null"}]
    prop.pop("maxLength", None)
    prop["description"] = MODEL_FIELD


@lru_cache(maxsize=8)
def _document(shape: tuple[int, ...], latent_dim: int, auth: bool,
              names: tuple[str, ...] | None = None, default: str | None = None
              ) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for op in OPERATIONS.values():
        schema = op.request.model_json_schema(ref_template=REF)
        _model_field(schema, names, default)
        _typed_tensors(schema)
        schemas.update(schema.pop("$defs", {}))
        schemas[op.request.__name__] = schema
        paths[op.route] = {"post": {
            "operationId": op.name, "summary": op.summary, "tags": ["VAE"],
            "description": f"{op.summary}\n\nRequest fields are {op.request.__name__}; fields "
                           "not listed are refused (400 naming them).",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.request.__name__}"},
                "example": op.example(list(shape), latent_dim)}}},
            "responses": _responses(_json_ok(
                "the operation's fields; image fields in the request's output_format "
                "(json: nested arrays, npy, png)", _ref(r.RESPONSES[op.name])), API_ERRORS)}}
    for method, template, handler, summary in v2_rest.ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": V2_PATH_PARAMS[p]}
                  for p in ("model", "version") if "{" + p + "}" in template]
        entry: dict[str, Any] = {
            "operationId": f"v2_{handler.__name__}" + ("_version" if "{version}" in template
                                                     else ""),
            "summary": f"KServe V2: {summary}", "tags": ["KServe V2"], "parameters": params,
            "description": V2_DESCRIPTIONS[handler.__name__]}
        if handler is v2_rest.infer:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/InferRequest"},
                "example": {"inputs": [{"name": "z", "datatype": "FP32",
                                        "shape": [1, latent_dim],
                                        "data": [0.0] * latent_dim}]}}}}
            ok = {"description": "outputs (binary ones after the JSON header)", "content": {
                "application/json": {"schema": _ref(r.V2InferResponse)},
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType":
                                                        "application/octet-stream"}}}}
            entry["responses"] = _responses(ok, API_ERRORS)
        elif method == "POST":
            body = {"type": "object", "additionalProperties": False, "properties": {
                "ready": {"type": "boolean", "default": False,
                          "description": "list only READY versions"}}} \
                if handler is v2_rest.index else {"type": "object", "maxProperties": 0}
            entry["requestBody"] = {"required": False, "content": {"application/json": {
                "schema": body, "example": {}}}}
            answer = {"type": "array", "items": _ref(r.V2IndexEntry)} \
                if handler is v2_rest.index else _ref(r.V2Empty)
            entry["responses"] = _responses(_json_ok(summary, answer), API_ERRORS)
        elif handler in (v2_rest.live, v2_rest.ready, v2_rest.model_ready):
            entry["responses"] = _responses({"description": summary}, [400, 404, 503])
        else:
            answer = _ref(r.V2ServerMetadata if handler is v2_rest.server_metadata
                          else r.V2ModelMetadata)
            entry["responses"] = _responses(_json_ok(summary, answer), [404, 503])
        paths.setdefault(template, {})[method.lower()] = entry
    schemas.update(_answer_schemas())
    v2_schema = v2_rest.InferRequest.model_json_schema(ref_template=REF)
    schemas.update(v2_schema.pop("$defs", {}))
    schemas["InferRequest"] = v2_schema
    for path, summary in (("/livez", "200 while the server runs"),
                          ("/readyz", "200 once every loaded version is verified and warm"),
                          ("/metrics", "Prometheus text")):
        paths[path] = {"get": {"operationId": path.strip("/"), "tags": ["Operations"],
                               "summary": summary, "description": OPS_DESCRIPTIONS[path],
                               "responses": _responses({"description": summary}, [503])}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "VAE serving", "version": v2.server_metadata()["version"],
                 "description": "Encode images to the posterior N(mu, sigma^2), decode, "
                                "sample, interpolate, reconstruct and score, over HTTP JSON "
                                "and KServe V2 (REST here, gRPC on its own port). Images: "
                                f"[N, {', '.join(map(str, shape))}]; latent size "
                                f"{latent_dim}."},
        "paths": paths, "components": {"schemas": schemas}}
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                           "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
