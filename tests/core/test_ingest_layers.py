"""The ingest modules import only downwards (no cycle), read from their import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import scrm

SERVICES = Path(scrm.__file__).parent / "services" / "conversations"
PACKAGE = "scrm.services.conversations"
# Top to bottom: each module may import only modules after it.
LAYERS = ["ingest", "ingest_batch", "ingest_pg", "ingest_one", "ingest_events", "ingest_identity", "ingest_writes",
          "ingest_rules", "inbound_clean"]


def imported_services(path: Path) -> set[str]:
    """The modules of the conversations package `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {alias.name for alias in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[3])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[3] for a in node.names if a.name.startswith(PACKAGE + ".")}
    return found


def test_every_ingest_module_is_in_a_layer() -> None:
    present = {p.stem for p in SERVICES.glob("ingest*.py")} | {"inbound_clean"}
    assert present <= set(LAYERS), present - set(LAYERS)


def test_ingest_modules_import_only_downwards() -> None:
    for index, name in enumerate(LAYERS):
        path = SERVICES / f"{name}.py"
        assert path.exists(), f"{path} is listed as an ingest layer but does not exist"
        upwards = imported_services(path) & set(LAYERS[: index + 1])
        assert not upwards, f"{name} imports {sorted(upwards)}, which are not below it"
