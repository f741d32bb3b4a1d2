"""The OpenAPI document (built from the routes and their docstrings) and a docs page that
needs no network (no CDN): one HTML page listing every operation."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.routing import BaseRoute, Route

_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")

_TAGS = {
    "/v1/": "Segment-compatible collection",
    "/v3/": "Brevo-compatible API",
    "/api/": "Leadflow API",
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "/v1/": [{"writeKey": []}],
    "/v3/": [{"apiKey": []}],
    "/api/": [{"bearer": []}, {"apiKey": []}],
}
_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}


def _prefix(path: str) -> str | None:
    return next((p for p in _TAGS if path.startswith(p)), None)


def openapi_spec(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    try:
        release = version("leadflow")
    except PackageNotFoundError:
        release = "0"
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        doc = " ".join((route.endpoint.__doc__ or "").split())
        prefix = _prefix(route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation: dict[str, Any] = {
                "summary": doc.split(". ")[0][:120] if doc else route.name,
                "description": doc,
                "operationId": f"{method.lower()}_{route.name}",
                "tags": [_TAGS[prefix]] if prefix else ["Service"],
                "responses": {"200": {"description": "success"}, "4XX": _ERROR},
            }
            if prefix:
                operation["security"] = _SECURITY[prefix]
            parameters = [
                {
                    "name": m.group(1),
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer" if m.group(2) == "int" else "string"},
                }
                for m in _PARAM.finditer(route.path)
            ]
            if parameters:
                operation["parameters"] = parameters
            if method in ("POST", "PUT"):
                operation["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Leadflow",
            "version": release,
            "description": "Segment-compatible collection (/v1), a Brevo-compatible subset "
            "(/v3) and Leadflow's own API (/api).",
        },
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
        },
        "paths": paths,
    }


def docs_page(spec: dict[str, Any]) -> str:
    rows = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            rows.append(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>"
                "<td>{}</td></tr>".format(
                    method.upper(),
                    html.escape(path),
                    html.escape(", ".join(operation["tags"])),
                    html.escape(operation["description"]),
                )
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Leadflow API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 8px;"
        "vertical-align:top;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Leadflow API {html.escape(spec['info']['version'])}</h1>"
        "<p>The machine-readable document is <a href='/openapi.json'>/openapi.json</a>. "
        "Keys: <code>leadflow keys create --scope ingest|admin</code>; send one as the "
        "Basic user name (/v1), the <code>api-key</code> header (/v3, /api) or a Bearer "
        "token (/api).</p><table><tr><th>method</th><th>path</th><th>part</th>"
        "<th>what it does</th></tr>" + "".join(rows) + "</table></body></html>"
    )
