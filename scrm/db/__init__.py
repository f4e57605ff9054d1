"""The database: engine and sessions, the ORM models (schema.py maps every table), migrations.
May import the core below it (settings, secret_box, domain), never services, listeners or web."""
