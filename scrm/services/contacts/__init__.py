"""Contacts: typed custom attributes, CSV import/export, merging two contacts into one person.
May import scrm.domain, scrm.db and the services' uow/audit; never scrm.web or listeners.
"""
