"""Channel adapters: translate a network's webhooks and polls into scrm.domain values and send outbound messages.
May import: scrm.domain, the leaf scrm.outbound (safe HTTP) and channel SDKs; never scrm.db, services or web.
"""
