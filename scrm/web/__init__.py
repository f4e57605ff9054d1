"""The HTTP layer: API endpoints (routes.py lists them), pages, webhooks, web chat, WebSockets.
The top layer: may import services, listeners and the core; nothing below imports it."""
