"""The services: what the application does (ingest, conversations, desk, marketing, bot, delivery).
May import the core (context, events, db, domain) and channels, never listeners or the web."""
