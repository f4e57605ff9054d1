// 网站在线客服（管理员设置）的中文文案。{x} 占位符按纯文本填充。
export const zhWebchat = {
  "wc.open": "网站插件", "wc.title": "网站在线客服：{name}", "wc.embed": "嵌入代码", "wc.embed_hint": "把这段代码粘贴到网站每个页面的 </body> 之前。",
  "wc.copy": "复制", "wc.copied": "已复制", "wc.h5": "H5 聊天页（微信内置浏览器、App 内嵌页）", "wc.qr": "聊天页二维码",
  "wc.identity": "身份验证", "wc.identity_hint": "由您的服务器计算 identifier_hash = HMAC-SHA256(此密钥, identifier) 的十六进制，并与 identifier 一起传入。",
  "wc.secret_new": "生成新密钥", "wc.secret_once": "请立即复制：它只显示这一次。旧密钥已失效。",
  "wc.secret_masked": "已保存的密钥不会再次显示。生成新密钥会立即替换旧密钥，请同步更新您的服务器。",
  "wc.secret": "密钥", "wc.settings": "设置", "wc.origins": "允许嵌入的网站（每行一个源）",
  "wc.origins_hint": "例如 https://shop.example.com 或 https://*.example.com。其他网站无法加载插件。",
  "wc.chat_title": "标题", "wc.color": "品牌色", "wc.greeting": "欢迎语", "wc.away": "离线提示",
  "wc.banner": "工作时间横幅", "wc.zh": "中文", "wc.en": "英文", "wc.prechat": "聊天前先请访客留下联系方式",
  "wc.field_off": "不询问", "wc.field_optional": "选填", "wc.field_required": "必填",
  "wc.field.name": "称呼", "wc.field.email": "邮箱", "wc.field.phone": "手机",
  "wc.custom": "自定义字段（每行一个：键 | 名称）", "wc.require_identity": "仅限在我网站登录的访客（必须身份验证）",
  "wc.offline_email": "非工作时间请访客留下邮箱", "wc.email_inbox": "用于发送聊天记录和离线回复的邮件收件箱",
  "wc.none": "无", "wc.max_mb": "附件大小上限（MB）", "wc.save": "保存", "wc.saved": "已保存",
};
