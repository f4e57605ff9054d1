"""The aiohttp app: REST API (api_*.py), webhooks, web chat, UI pages, realtime socket, ops endpoints, OpenAPI.
May import: the layers below (services, listeners, db, domain, context), channels, bot_flows; writes via services.
"""
