"""The OpenAPI 3.1 document, generated from the same route table that serves /api/v1."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from scrm.web.routing import API_ROUTES

_PARAM = re.compile(r"{(\w+)}")


def build_openapi(prefix: str = "/api/v1") -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    seen: set[tuple[str, str]] = set()
    for route in API_ROUTES:
        if (route.method, route.path) in seen:
            continue
        seen.add((route.method, route.path))
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "Not authenticated"},
                "403": {"description": "Role not allowed or CSRF token missing"},
            },
        }
        if route.roles is not None:
            op["security"] = [{"bearer": []}, {"session": []}]
            op["x-roles"] = sorted(route.roles)
        else:
            op["security"] = []
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "integer"}} for n in _PARAM.findall(route.path)]
        params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                   for n, d in route.query.items()]
        if params:
            op["parameters"] = params
        if route.body is not None:
            name = route.body.__name__
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in schema.pop("$defs", {}).items():
                schemas[def_name] = definition
            schemas[name] = schema
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = op
    schemas["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "scrm agent API", "version": "1"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "personal API token (scrm_pat_...)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "scrm_session",
                            "description": "login session; writes need the X-CSRF-Token header"},
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())
