"""Tickets: opening, the state machine, agent edits and merges, and the desk's ticket queries.
May import scrm.domain, scrm.db and lower services (conversations, desk); never scrm.web or listeners.
"""
