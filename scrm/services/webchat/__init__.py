"""Web chat: visitors' history, receipts, presence and blocking, live pushes to their sockets, transcripts by email.
May import scrm.domain, scrm.db and lower services; never scrm.web or listeners.
"""
