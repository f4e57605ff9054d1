"""Marketing: segments, broadcasts and their rules and reports, campaigns, conversions, churn, opt-outs, OA mass sends.
May import scrm.domain, scrm.db, the outbox and lower services; never scrm.web or listeners.
"""
