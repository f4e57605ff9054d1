"""The service desk around conversations: assignment, automation, SLA, CSAT, snooze, bulk actions, reports, webhooks.
May import scrm.domain, scrm.db, bot_flows (pure helpers) and lower services; never scrm.web or listeners.
"""
