"""The product's import graph has no cycles and no arrow that runs against the layers.

Read from the source, not from a running interpreter: every `import` / `from ... import` statement
of scrm/, channels/ and bot_flows/ counts, wherever it stands (module level, inside a function, under
TYPE_CHECKING), since a function-level import that dodges a cycle is still the cycle. Modules are
found by walking the tree, so the test keeps working when modules move into sub-packages. The web
UI's ES modules (scrm/web/static/js) are checked for cycles the same way.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scrm", "channels", "bot_flows")
SKIP_DIRS = {"migrations", "static", "__pycache__"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if SKIP_DIRS.intersection(rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def _imported_names(node: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, int]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        yield target, node.lineno
        for alias in node.names:  # `from scrm.web import api_faq` imports the module api_faq
            yield f"{target}.{alias.name}", node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {product module it imports: line of the first such statement}."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, (path, is_package) in modules.items():
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name, line in _imported_names(node, module, is_package):
                target = resolve(name)
                if target is not None and target != module:
                    edges.setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan, iteratively (no recursion limit on a deep graph)
        work = [(v, iter(graph.get(v, ())))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph.get(w, ()))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_shortest_cycle(graph, c) for c in components]


def _shortest_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    for node in queue:  # breadth first: the shortest way back to `start`
        for w in sorted(graph.get(node, ())):
            if w == start:
                return paths[node] + [start]
            if w in component and w not in paths:
                paths[w] = paths[node] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def layer_violation(a: str, b: str) -> str | None:
    """Why `a` may not import `b`, or None when the arrow runs the right way."""
    for own in ("channels", "bot_flows"):
        if _within(a, own) and not (_within(b, own) or b == "scrm.domain"):
            return f"{own}/ may import only itself and scrm.domain"
    if _within(a, "scrm.services") and _within(b, "scrm.web", "scrm.listeners"):
        return "services must not import the web or the listeners"
    if _within(a, "scrm.services", "scrm.delivery") and b == "channels.registry":
        return "services read what a channel can do from the context (ChannelRules), not the adapter registry"
    if _within(a, "scrm.listeners") and _within(b, "scrm.web"):
        return "listeners must not import the web"
    if _within(a, "scrm.db") and _within(b, "scrm.services", "scrm.web", "scrm.listeners"):
        return "the database layer must not import services, web or listeners"
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "scrm.context" in graph and "channels.base" in graph  # the walk found the tree
    checked = graph
    cycles = find_cycles(checked)
    report = [" -> ".join(f"{m}:{checked[m][n]}" for m, n in zip(c, c[1:], strict=False)) + f" -> {c[-1]}"
              for c in cycles]
    assert not report, "import cycles (module:line of the import; one per tangle):\n" + "\n".join(report)


def test_no_backwards_imports() -> None:
    graph = import_graph()
    wrong = [f"{a}:{line} imports {b}: {why}"
             for a, out in sorted(graph.items()) for b, line in sorted(out.items())
             if (why := layer_violation(a, b)) is not None]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


JS = ROOT / "scrm" / "web" / "static"
# import ... from "./x.js", export ... from "./x.js", import "./x.js", import("./x.js"); a computed
# import(`./${name}.js`) cannot be read (main.js loads the marketing pages so: they must not import main.js).
_JS_IMPORT = re.compile(
    r"""(?:\b(?:import|export)\b[^"'();`]*?\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}/[^"']+)["']""")


def js_import_graph() -> dict[str, dict[str, int]]:
    """ES module -> {module it imports (static or dynamic import): line}, paths relative to static/."""
    graph: dict[str, dict[str, int]] = {}
    for path in sorted(JS.rglob("*.js")):
        name = path.relative_to(JS).as_posix()
        edges = graph.setdefault(name, {})
        text = path.read_text(encoding="utf-8")
        for match in _JS_IMPORT.finditer(text):
            target = (path.parent / match.group(1)).resolve().relative_to(JS.resolve()).as_posix()
            edges.setdefault(target, text.count("\n", 0, match.start()) + 1)
    return graph


def test_no_js_module_cycles() -> None:
    graph = js_import_graph()
    assert "js/main.js" in graph
    cycles = find_cycles(graph)
    report = [" -> ".join(f"{m}:{graph[m][n]}" for m, n in zip(c, c[1:], strict=False)) + f" -> {c[-1]}"
              for c in cycles]
    assert not report, "ES module cycles (module:line of the import):\n" + "\n".join(report)


def test_the_guard_sees_cycles_and_backwards_arrows() -> None:
    """The checks themselves: a function-level import closing a loop is a cycle; arrows are judged by layer."""
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("def f():\n    from scrm.web import serializers\n")
    names = [n for node in ast.walk(tree) for n, _ in _imported_names(node, "scrm.listeners.realtime", False)]
    assert "scrm.web.serializers" in names
    assert layer_violation("scrm.listeners.realtime", "scrm.web.serializers")
    assert layer_violation("scrm.services.desk.tickets", "scrm.web.routing")  # sub-packages count too
    assert layer_violation("channels.wecom.api", "scrm.outbound")
    assert layer_violation("scrm.db.models", "scrm.services.agents.audit")
    assert layer_violation("scrm.services.bot.rounds", "channels.registry")
    assert layer_violation("scrm.delivery.recovery", "channels.registry")
    assert layer_violation("scrm.channels_runtime", "channels.registry") is None
    assert layer_violation("channels.wecom.api", "scrm.domain") is None
    assert layer_violation("scrm.web.api_desk", "scrm.services.tickets.records") is None
