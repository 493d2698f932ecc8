"""Make the published OpenAPI description tell the truth about errors.

FastAPI documents request validation as a 422 with its own JSON shape; ours are problem+json, and
every protected route can also answer 401, every route with a body 400 (unparseable JSON). One pass
over the generated document, so no route has to remember it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from stalwart_master.schemas.common import Problem

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_DESCRIPTIONS = {"400": "Unparseable request", "401": "Not authenticated", "422": "Invalid request"}


def install(app: FastAPI, public: set[tuple[str, str]]) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if (method.upper(), path) not in public:
                    responses.setdefault("401", {})
                if "requestBody" in operation:
                    responses.setdefault("400", {})
                if "parameters" in operation or "requestBody" in operation:
                    responses.setdefault("422", {})
                for status, response in responses.items():
                    if status.startswith(("4", "5")):
                        response["content"] = PROBLEM
                        response.setdefault("description", _DESCRIPTIONS.get(status, "Error"))
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
