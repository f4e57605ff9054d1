"""The services, grouped by capability: the only code that writes (ingest, conversations, desk, marketing, bot).
May import the core (context, events, db, domain, serializers) and channels, never listeners or the web."""
