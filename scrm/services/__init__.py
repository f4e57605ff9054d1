"""Business operations, the only code that writes: ingest, outbox, conversations, desk, marketing, bot, reports.
May import: scrm.db, scrm.domain, scrm.context and other top modules, channels, bot_flows; never web or listeners.
"""
