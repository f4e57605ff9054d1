"""The social CRM: domain values, db, services, listeners, web, and the process wiring (context, worker, cli).
Layering (each imports only lower): domain <- db <- services <- listeners <- web; channels, bot_flows on domain.
"""
