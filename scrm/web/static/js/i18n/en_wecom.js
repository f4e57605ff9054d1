// English dictionary of the WeCom (微信客服, 客户联系) admin pages.
export const enWecom = {
  "wecom.help.wecom_kf": "微信客服: in the WeCom admin console create a self-built app (应用管理 → 自建), add it under 微信客服 → API → 可调用接口的应用, and set the kf account to 「通过API管理微信客服账号」. secret is that app's Secret (the 微信客服 system secret no longer works for new corps since Dec 2023). In the app's 接收消息 settings enter the callback URL below with the Token and EncodingAESKey, and add this server's outbound IP to 企业可信IP.",
  "wecom.help.wecom_contacts": "客户联系: secret is the Secret under 客户与上下游 → 客户联系 → API; on the same page set the event server (the callback URL below, Token, EncodingAESKey) and add this server's outbound IP to 企业可信IP.",
  "wecom.json_hint": "a JSON object, e.g. {\"agent login\": \"WeCom userid\"}",
  "wecom.list_hint": "separate values with commas",
  "wecom.ways": "Links",
  "wecom.ways_title": "Acquisition links: {name}",
  "wecom.way_name": "Name", "wecom.scene": "Source key (scene / state)", "wecom.users": "Staff userids (comma-separated)",
  "wecom.welcome": "Welcome message (optional)", "wecom.create_way": "Create link",
  "wecom.customers": "Customers", "wecom.conversations": "Conversations", "wecom.link": "Link / QR code",
  "wecom.no_ways": "No links yet. Create one per acquisition source to see which source brought which customers.",
  "wecom.open_qr": "Open the QR code",
  "wecom.sync": "Sync now", "wecom.synced": "Synced: {n}", "wecom.close": "Close",
};
