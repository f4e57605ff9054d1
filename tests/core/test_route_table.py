"""Routes, listeners and periodic jobs come from explicit lists: nothing is dropped silently.

A module that declares @api endpoints or installs listeners but is missing from its list would
serve nothing; these tests name it instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

from aiohttp import web

from scrm import listeners, periodic
from scrm.web.app import add_routes
from scrm.web.routes import API_MODULES, API_PREFIX, api_routes

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _decorators(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                func = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(func, ast.Name):
                    names.add(func.id)
    return names


def test_every_module_with_api_endpoints_is_listed() -> None:
    declaring = {_module_name(p) for p in (ROOT / "scrm" / "web").rglob("*.py") if "api" in _decorators(p)}
    listed = {m.__name__ for m in API_MODULES}
    assert declaring, "no @api module found"
    assert declaring - listed == set(), "add these to scrm.web.routes.API_MODULES"


def test_every_listener_module_is_installed() -> None:
    modules = {_module_name(p) for p in (ROOT / "scrm" / "listeners").rglob("*.py")
               if "def install(" in p.read_text(encoding="utf-8")}
    installed = {fn.__module__ for fn in listeners.INSTALLERS}
    assert modules == installed


def test_the_app_serves_every_api_endpoint_and_the_pages() -> None:
    app = web.Application()
    add_routes(app)
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for route in api_routes():
        assert (route.method, API_PREFIX + route.path) in served
    for module in API_MODULES:  # each listed module serves something
        assert any(r.handler.__module__ == module.__name__ for r in api_routes()), module.__name__
    for page in [("GET", "/ws"), ("GET", "/login"), ("GET", "/desk/reports"), ("GET", "/contacts"),
                 ("GET", "/unsubscribe/{token}"), ("GET", "/r/{token}"), ("GET", "/chat/{inbox}"),
                 ("GET", "/chat/{inbox}/ws"), ("POST", "/chat/{inbox}/messages"), ("GET", "/demo/site"),
                 ("GET", "/csat/{token}"), ("GET", "/api/v1/openapi.json"), ("GET", "/healthz"),
                 ("GET", "/favicon.ico")]:
        assert page in served, page
    assert len(served) == len(app.router.routes())  # no route added twice


def test_periodic_jobs_have_distinct_lease_names() -> None:
    names = [name for name, _ in periodic.JOBS]
    assert len(set(names)) == len(names) == 10
    assert all(callable(job) for _, job in periodic.JOBS)


def test_the_schema_maps_every_model_module() -> None:
    """scrm.db.schema (imported by the Database) imports every model module, so cross-module foreign keys resolve."""
    from scrm.db import schema

    modules = {p.stem for p in (ROOT / "scrm" / "db").glob("models*.py")}
    assert modules == {name for name in vars(schema) if name.startswith("models")}
