"""The bot's configuration file (config/bot.toml): read by the bot runtime and the FAQ index alike, so
neither imports the other for it."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = ROOT / "config" / "bot.toml"


def load_bot_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read config/bot.toml (or SCRM_BOT_CONFIG); a missing file means defaults."""
    path = Path(path or os.environ.get("SCRM_BOT_CONFIG") or DEFAULT_CONFIG)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"bot config {path} is not valid TOML: {exc}") from None
