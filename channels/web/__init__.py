"""Web chat: the website widget and the H5 chat page (`/chat/{inbox}`).
May import: scrm.domain and channels (base, registry); no other scrm (the HTTP side is scrm.web.webchat*).

Visitors talk to `scrm.web.webchat*` (HTTP + WebSocket); their messages go through the ingest sink
like any webhook. This adapter only delivers: `send` (called by the outbox worker) tells the
visitor's open sockets, in whichever process holds them, that a message is waiting. The message is
already in the database, so a visitor who was offline gets it from the history on reconnect.
"""

from channels.web.adapter import WebChatAdapter

__all__ = ["WebChatAdapter"]
