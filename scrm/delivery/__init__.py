"""Delivery: the outbox worker that claims deliveries, paces them per inbox and calls adapter.send, exactly once.
May import channels (through the runtime), scrm.domain, scrm.db and scrm.services (outbox, uow); never scrm.web or listeners.
"""
