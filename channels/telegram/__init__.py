"""Telegram channel: importing this package registers the `telegram` adapter.
May import: scrm.domain, channels (base, registry), python-telegram-bot and aiohttp; no other scrm.
"""

from channels.telegram.adapter import TelegramAdapter, TelegramSecrets, TelegramSettings

__all__ = ["TelegramAdapter", "TelegramSecrets", "TelegramSettings"]
