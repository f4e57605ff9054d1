"""WeCom (企业微信): 微信客服 (`wecom_kf`) and 客户联系 (`wecom_contacts`); importing registers both adapters.
May import: scrm.domain, channels (base, registry, replay), wechatpy and aiohttp; no other scrm.
"""

from channels.wecom.contacts import WeComContactsAdapter
from channels.wecom.kf import WeComKfAdapter

__all__ = ["WeComContactsAdapter", "WeComKfAdapter"]
