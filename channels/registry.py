"""Maps a channel type name to its adapter class (Rasa's `{name: cls}` registry)."""

from __future__ import annotations

import importlib
import importlib.util

from channels.base import ChannelAdapter

# Known channel modules, imported lazily so a deployment only loads the SDKs it uses.
KNOWN_CHANNELS: dict[str, str] = {
    "api": "channels.api",
    "memory": "channels.memory",
    "telegram": "channels.telegram",
    "wechat_oa": "channels.wechat",
    "email": "channels.email",
    "wecom_kf": "channels.wecom",
    "wecom_contacts": "channels.wecom",
    "web": "channels.web",
}

_REGISTRY: dict[str, type[ChannelAdapter]] = {}


def register(cls: type[ChannelAdapter]) -> type[ChannelAdapter]:
    """Class decorator: make an adapter available under its `channel_type`."""
    _REGISTRY[cls.channel_type] = cls
    return cls


def get_adapter_class(channel_type: str) -> type[ChannelAdapter]:
    """Return the adapter class for a channel type; KeyError if unknown."""
    if channel_type not in _REGISTRY:
        module = KNOWN_CHANNELS.get(channel_type)
        if module is None or importlib.util.find_spec(module) is None:
            raise KeyError(channel_type)
        importlib.import_module(module)
    return _REGISTRY[channel_type]


def available_channel_types() -> list[str]:
    """Channel types whose module is installed in this build."""
    return [name for name, mod in KNOWN_CHANNELS.items() if importlib.util.find_spec(mod) is not None]
