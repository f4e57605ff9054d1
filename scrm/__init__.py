"""scrm: the application (core, database, services, listeners, web), layered bottom to top.
Lower layers never import higher ones; tests/core/test_import_graph.py checks it."""
