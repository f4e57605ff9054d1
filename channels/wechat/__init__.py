"""WeChat Official Account channel (`wechat_oa`); importing it registers the adapter."""

from channels.wechat.adapter import WeChatAdapter

__all__ = ["WeChatAdapter"]
