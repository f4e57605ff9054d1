"""Agents and access: accounts, sessions and tokens, inbox membership, file access, preferences, the audit log.
May import scrm.domain and scrm.db; never scrm.web or listeners.
"""
