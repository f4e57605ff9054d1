"""WeCom (企业微信): 微信客服 pulls and effects, 客户联系 sync, 群发 tasks, UnionID linking, acquisition links.
May import channels.wecom (its API client), scrm.domain, scrm.db and lower services; never scrm.web or listeners.
"""
