"""The bot in the application: a round runs the pure flow engine and applies its actions; the FAQ knowledge base.
May import bot_flows, scrm.domain, scrm.db and lower services; never scrm.web or listeners.
"""
