"""The API documents itself: the OpenAPI document at /docs.json, built from the operations'
request models (service/operations/api.py) and the V2 REST routes (service/doors/v2_rest.py),
with example requests shaped for the served model; Swagger UI at /docs (BentoML's bundled
Swagger UI assets, without third-party scripts, under the explorer's Content-Security-Policy)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from modelrepo.repository import MODEL_NAME_RULE
from service.doors import v2_rest
from service.errors import KINDS
from service.operations import v2
from service.operations.api import OPERATIONS

SWAGGER_PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>VAE serving API</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
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
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string", "description": "names the field and limit"},
                        "request_id": {"type": "string"}, "detail": {"type": "array"}}}
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


def _json_ok(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"type": "object"}}}}


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
        schema = op.request.model_json_schema(ref_template="#/components/schemas/{model}")
        _model_field(schema, names, default)
        schemas.update(schema.pop("$defs", {}))
        schemas[op.request.__name__] = schema
        paths[op.route] = {"post": {
            "operationId": op.name, "summary": op.summary, "tags": ["VAE"],
            "description": f"{op.summary}\n\nRequest fields are {op.request.__name__}; fields "
                           "not listed are refused (400 naming them).",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.request.__name__}"},
                "example": op.example(list(shape), latent_dim)}}},
            "responses": _responses(_json_ok("the operation's fields"), API_ERRORS)}}
    for method, template, handler, summary in v2_rest.ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": V2_PATH_PARAMS[p]}
                  for p in ("model", "version") if "{" + p + "}" in template]
        entry: dict[str, Any] = {
            "operationId": f"v2_{handler.__name__}" + ("_version" if "{version}" in template
                                                     else ""),
            "summary": f"KServe V2: {summary}", "tags": ["KServe V2"], "parameters": params}
        if handler is v2_rest.infer:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/InferRequest"},
                "example": {"inputs": [{"name": "z", "datatype": "FP32",
                                        "shape": [1, latent_dim],
                                        "data": [0.0] * latent_dim}]}}}}
            ok = {"description": "outputs (binary ones after the JSON header)", "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
            entry["responses"] = _responses(ok, API_ERRORS)
        elif method == "POST":
            entry["requestBody"] = {"required": False, "content": {"application/json": {
                "schema": {"type": "object"}, "example": {}}}}
            entry["responses"] = _responses(_json_ok(summary), API_ERRORS)
        elif handler in (v2_rest.live, v2_rest.ready, v2_rest.model_ready):
            entry["responses"] = _responses({"description": summary}, [400, 404, 503])
        else:
            entry["responses"] = _responses(_json_ok(summary), [404, 503])
        paths.setdefault(template, {})[method.lower()] = entry
    v2_schema = v2_rest.InferRequest.model_json_schema(
        ref_template="#/components/schemas/{model}")
    schemas.update(v2_schema.pop("$defs", {}))
    schemas["InferRequest"] = v2_schema
    for path, summary in (("/livez", "200 while the server runs"),
                          ("/readyz", "200 once every loaded version is verified and warm"),
                          ("/metrics", "Prometheus text")):
        paths[path] = {"get": {"operationId": path.strip("/"), "tags": ["Operations"],
                               "summary": summary,
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
