"""Telegram channel: importing this package registers the `telegram` adapter."""

from channels.telegram.adapter import TelegramAdapter, TelegramSecrets, TelegramSettings

__all__ = ["TelegramAdapter", "TelegramSecrets", "TelegramSettings"]
