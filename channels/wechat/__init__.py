"""WeChat Official Account channel (`wechat_oa`); importing it registers the adapter.
May import: scrm.domain, channels (base, registry, replay), wechatpy, xmltodict and aiohttp; no other scrm.
"""

from channels.wechat.adapter import WeChatAdapter

__all__ = ["WeChatAdapter"]
