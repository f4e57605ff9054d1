"""Alembic's environment and the numbered schema migrations (versions/), one head, applied by scrm.db.migrate.
May import: alembic, sqlalchemy and scrm.db.models; never services, listeners or web (a migration is frozen code).
"""
