// The chat's texts in Chinese and English (same keys in both); {name} placeholders are filled as plain text.
const zh = {
  "online": "在线 · 通常几分钟内回复", "offline": "客服暂时不在线", "back_at": "客服 {when} 回来",
  "close": "关闭在线客服", "menu": "更多", "transcript": "通过邮件发送聊天记录", "log": "聊天消息",
  "input": "输入消息…", "input_label": "消息", "send": "发送", "attach": "发送图片或文件",
  "sending": "发送中…", "sent": "已发送", "read": "已读", "failed": "发送失败，点击重试",
  "typing": "{name} 正在输入…", "agent": "客服", "bot": "智能助手", "you": "我",
  "prechat_title": "开始聊天前，请留下您的联系方式", "start": "开始聊天", "required": "必填",
  "offline_title": "留下邮箱，我们上线后通过邮件回复您", "offline_email": "邮箱", "offline_name": "称呼（选填）",
  "offline_message": "您的问题", "offline_send": "留言", "offline_done": "已收到留言，我们会尽快通过邮件回复您。",
  "email_label": "邮箱地址", "transcript_send": "发送", "transcript_done": "聊天记录已发送到 {email}",
  "cancel": "取消", "rate": "请为本次服务评分", "rated": "感谢您的评价！", "stars": "{n} 星",
  "reconnecting": "正在重新连接…", "polling": "已切换到兼容模式", "blocked": "此聊天暂不可用。",
  "error": "出错了：{message}", "file_too_large": "文件太大（最大 {max}）", "file_type": "不支持此文件类型",
  "expired": "会话已过期，正在重新开始…", "identity_failed": "身份验证失败，无法开始聊天。",
  "download": "下载 {name}", "image": "图片 {name}",
};
const en = {
  "online": "Online · we usually reply in a few minutes", "offline": "We are away right now",
  "back_at": "Agents are back {when}", "close": "Close chat", "menu": "More", "transcript": "Email me the transcript",
  "log": "Chat messages", "input": "Type a message…", "input_label": "Message", "send": "Send",
  "attach": "Send a picture or file", "sending": "Sending…", "sent": "Sent", "read": "Read",
  "failed": "Not sent — tap to retry", "typing": "{name} is typing…", "agent": "Agent", "bot": "Assistant", "you": "You",
  "prechat_title": "Before we start, how can we reach you?", "start": "Start chat", "required": "required",
  "offline_title": "Leave your email and we will reply by email", "offline_email": "Email",
  "offline_name": "Name (optional)", "offline_message": "Your question", "offline_send": "Send message",
  "offline_done": "Thanks! We got your message and will reply by email soon.",
  "email_label": "Email address", "transcript_send": "Send", "transcript_done": "The transcript was sent to {email}",
  "cancel": "Cancel", "rate": "How did we do?", "rated": "Thank you for your rating!", "stars": "{n} stars",
  "reconnecting": "Reconnecting…", "polling": "Using the compatibility connection", "blocked": "This chat is not available.",
  "error": "Something went wrong: {message}", "file_too_large": "The file is too large (at most {max})",
  "file_type": "This kind of file is not accepted", "expired": "Your session expired; starting again…",
  "identity_failed": "We could not verify who you are, so the chat cannot start.",
  "download": "Download {name}", "image": "Picture {name}",
};
export const DICTS = { zh, en };

export function translator(lang) {
  const dict = DICTS[lang] || en;
  return (key, vars = {}) => (dict[key] ?? en[key] ?? key).replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}
