"""docs/API.md's request-field tables, generated from the service's own OpenAPI document (the
operations' pydantic request models, service/operations/requests.py). `python -m
service.doors.api_tables` prints them; tests/test_api_doc.py keeps the page equal to them."""

from __future__ import annotations

from typing import Any

from service.doors import openapi


def _type(spec: dict[str, Any]) -> str:
    if any("$ref" in s for s in spec.get("anyOf", [])):
        return "tensor"  # a JSON array, {"npy": ...} or {"png": [...]}: the meaning says which
    kinds = [s.get("type", "any") for s in spec.get("anyOf", [spec])]
    kinds = [k for k in kinds if k != "null"] or ["any"]
    enum = spec.get("enum") or next((s.get("enum") for s in spec.get("anyOf", []) if "enum" in s),
                                    None)
    return " \\| ".join(f"`{e}`" for e in enum) if enum else "/".join(kinds)


def _bounds(spec: dict[str, Any]) -> str:
    parts = []
    for s in spec.get("anyOf", [spec]):
        for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
            if isinstance(s.get(key), int | float) and not isinstance(s.get(key), bool):
                parts.append(f"{sign} {s[key]:g}")
    return ", ".join(parts)


def markdown_tables(doc: dict[str, Any] | None = None) -> str:
    """One table per JSON operation: field, type, default (or required), limits, meaning."""
    doc = doc or openapi._document((1, 8, 8), 8, False)
    schemas, out = doc["components"]["schemas"], []
    for path, methods in doc["paths"].items():
        op = methods.get("post", {})
        ref = op.get("requestBody", {}).get("content", {}).get(
            "application/json", {}).get("schema", {}).get("$ref")
        if path.startswith("/v2") or ref is None:
            continue
        schema = schemas[ref.rsplit("/", 1)[1]]
        out += [f"**`POST {path}`** — {schema.get('description', '')}", "",
                "| field | type | default | limits | meaning |", "|---|---|---|---|---|"]
        for name, spec in schema.get("properties", {}).items():
            default = "required" if name in schema.get("required", []) else \
                f"`{spec.get('default')}`".replace("`None`", "none")
            meaning = spec.get("description", "").replace("|", "\\|")
            kind = "string" if name == "model" else _type(spec)  # its enum: the server's names
            out.append(f"| `{name}` | {kind} | {default} | {_bounds(spec)} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_tables())
