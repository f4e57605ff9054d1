"""The schema: SQLAlchemy 2.0 models by capability (models_*.py), engines and sessions, running migrations.
May import: sqlalchemy, scrm.domain, scrm.secret_box/settings (sealed columns); never services, listeners or web.
"""
