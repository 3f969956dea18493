"""The OpenAPI document tells the truth about errors: every error response is RFC 9457
`application/problem+json` (chassis.problems), not FastAPI's default `application/json`
`HTTPValidationError`.

FastAPI documents only the success status and a 422 in its own shape. Every operation here
can also answer 401/403 (auth), 404 (tenant scoping), 409/412/428 (conflicts, If-Match), 413
(body limit) and more, all as problem+json, so each operation gets:
- its 422 rewritten to problem+json with the `ValidationProblem` schema (`errors` listing the
  failing field paths);
- a `default` response: any other status is an error in the `Problem` shape. A success
  answered with an undocumented status still fails a client's (or schemathesis') checks,
  since a success body is not a `Problem` nor served as problem+json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from chassis.problems import PROBLEM_JSON

_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem detail.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}

VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ValidationProblem",
    "description": "A 422 problem detail listing every failing field path.",
    "allOf": [{"$ref": "#/components/schemas/Problem"}],
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {
                    "path": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "message": {"type": "string"},
                },
            },
        }
    },
}


def _problem(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def document_problems(doc: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the error responses of a generated document in place (and return it)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ValidationProblem"] = VALIDATION_PROBLEM_SCHEMA
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _problem("Validation error", "ValidationProblem")
            responses.setdefault("default", _problem("Error", "Problem"))
    # FastAPI's own error schemas, unless something else still uses them (in this order:
    # the first refers to the second).
    for name in ("HTTPValidationError", "ValidationError"):
        if not _referenced(doc, f"#/components/schemas/{name}"):
            schemas.pop(name, None)
    return doc


def _referenced(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return any((k == "$ref" and v == ref) or _referenced(v, ref) for k, v in node.items())
    if isinstance(node, list):
        return any(_referenced(v, ref) for v in node)
    return False


def install_problem_docs(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json`) document problem+json errors."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
