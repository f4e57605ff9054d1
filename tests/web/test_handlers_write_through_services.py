"""Web handlers read, check and answer; every write goes through scrm.services (one write path each)."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "scrm" / "web"
WRITES = {"add", "add_all", "delete", "merge"}
STATEMENTS = {"delete", "update", "insert"}


def _writes(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        # session.add(...), tx.session.delete(...), s.add_all(...)
        if isinstance(fn, ast.Attribute) and fn.attr in WRITES:
            owner = fn.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in {"session", "s"}:
                found.append((node.lineno, f"{name}.{fn.attr}"))
        # s.execute(delete(Model)...) / update(...) / insert(...)
        if isinstance(fn, ast.Attribute) and fn.attr == "execute" and node.args:
            inner = node.args[0]
            while isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute):
                inner = inner.func.value
            if isinstance(inner, ast.Call) and getattr(inner.func, "id", "") in STATEMENTS:
                found.append((node.lineno, f"execute({inner.func.id}(...))"))  # type: ignore[union-attr]
    return found


def test_no_web_handler_writes_the_database_itself() -> None:
    offenders = []
    for path in sorted(WEB.rglob("*.py")):
        for line, what in _writes(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(WEB.parent.parent)}:{line} {what}")
    assert not offenders, "web handlers must write through scrm.services:\n" + "\n".join(offenders)
