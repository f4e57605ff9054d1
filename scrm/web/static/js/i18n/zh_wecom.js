// 企业微信（微信客服、客户联系）管理页面的中文词典。
export const zhWecom = {
  "wecom.help.wecom_kf": "微信客服：在企业微信管理后台「应用管理 → 自建」创建应用，把它加入「微信客服 → API → 可调用接口的应用」，并把客服账号设为「通过API管理微信客服账号」。secret 填该自建应用的 Secret（2023年12月起不再支持微信客服系统 Secret）。在应用的「接收消息」里填下方回调地址、Token 和 EncodingAESKey，并把本服务器的出口 IP 加入「企业可信IP」。",
  "wecom.help.wecom_contacts": "客户联系：secret 填「客户与上下游 → 客户联系 → API」的 Secret；在同一页面设置接收事件服务器（下方回调地址、Token、EncodingAESKey），并把本服务器的出口 IP 加入「企业可信IP」。",
  "wecom.json_hint": "JSON 对象，例如 {\"客服账号\": \"企业微信 userid\"}",
  "wecom.list_hint": "多个值用逗号分隔",
  "wecom.ways": "渠道链接",
  "wecom.ways_title": "获客渠道：{name}",
  "wecom.way_name": "名称", "wecom.scene": "来源标识（scene / state）", "wecom.users": "成员 userid（逗号分隔）",
  "wecom.welcome": "欢迎语（可选）", "wecom.create_way": "创建渠道链接",
  "wecom.customers": "客户数", "wecom.conversations": "会话数", "wecom.link": "链接 / 二维码",
  "wecom.no_ways": "还没有渠道链接。为每个获客来源创建一个，即可统计各来源带来的客户。",
  "wecom.open_qr": "打开二维码",
  "wecom.sync": "立即同步", "wecom.synced": "同步完成：{n}", "wecom.close": "关闭",
};
