"""Conversations: the ingest sink every channel calls, and the verbs, search and turns on a conversation.
May import scrm.domain, scrm.db, scrm.events/event_log, scrm.services (uow, outbox, agents, contacts); never scrm.web or listeners.
"""
