// 中文词典。键按页面分组；{name} 占位符以纯文本填充。
import { zhMarketing } from "./zh_marketing.js";
import { zhCampaigns } from "./zh_campaigns.js";
import { zhDesk } from "./zh_desk.js";
import { zhWecom } from "./zh_wecom.js";
import { zhWechat } from "./zh_wechat.js";
import { zhWebchat } from "./zh_webchat.js";
import { zhAccess } from "./zh_access.js";
export const zh = {
  "loading": "加载中…",
  "nav.inbox": "收件箱", "nav.admin": "管理", "nav.simulator": "客户模拟器",
  "header.waiting": "排队：{n}", "header.waiting_hint": "排队等待人工客服的会话数",
  "header.availability": "在线状态", "header.logout": "退出登录",
  "availability.online": "在线", "availability.away": "离开", "availability.offline": "离线",
  "role.admin": "管理员", "role.agent": "客服", "role.marketer": "运营",
  "live.connecting": "连接中…", "live.live": "● 实时", "live.reconnecting": "正在重新连接…",
  "login.subtitle": "登录团队收件箱", "login.name": "账号", "login.password": "密码",
  "login.submit": "登录", "login.bad": "账号或密码错误。",
  "login.expired": "登录已过期，请重新登录——未发送的草稿已保留。",
  "tab.mine": "我的", "tab.unassigned": "未分配", "tab.all": "全部",
  "filter.status": "状态", "filter.all_status": "全部状态", "filter.handler": "处理方", "filter.any_handler": "全部处理方",
  "filter.inbox": "渠道", "filter.any_inbox": "全部渠道", "filter.label": "标签",
  "list.search": "搜索姓名、电话、邮箱或消息", "list.empty": "暂无会话。",
  "list.more": "加载更多", "list.unassigned": "未分配", "list.waiting_since": "等待回复",
  "list.last_activity": "最近活动",
  "status.open": "进行中", "status.pending": "待处理", "status.snoozed": "已延后", "status.resolved": "已解决",
  "handler.bot": "机器人", "handler.queue": "排队中", "handler.human": "人工",
  "priority.low": "低", "priority.normal": "普通", "priority.high": "高", "priority.urgent": "紧急",
  "thread.pick": "请在左侧选择一个会话。", "thread.older": "加载更早的消息",
  "thread.typing": "{name} 正在输入…", "thread.private": "内部备注", "thread.edited": "已编辑",
  "thread.retry": "重试", "thread.take_over": "接管", "thread.hand_back": "交还机器人",
  "thread.resolve": "解决", "thread.reopen": "重新打开", "thread.assign": "分配", "thread.unassigned": "未分配",
  "thread.priority": "优先级", "thread.labels": "标签，用逗号分隔", "thread.snooze": "延后",
  "thread.snoozed_until": "延后至 {time}",
  "thread.attachment_image": "图片", "thread.attachment_file": "文件", "thread.attachment_audio": "音频",
  "thread.attachment_voice": "语音", "thread.attachment_video": "视频", "thread.attachment_sticker": "表情",
  "thread.attachment_pending": "尚未下载",
  "snooze.choose": "延后…", "snooze.1h": "1 小时", "snooze.4h": "4 小时", "snooze.24h": "1 天", "snooze.week": "1 周",
  "sender.bot": "机器人", "sender.agent": "客服", "sender.system": "系统",
  "delivery.queued": "排队中", "delivery.sending": "发送中", "delivery.sent": "已发送", "delivery.delivered": "已送达",
  "delivery.read": "已读", "delivery.failed": "发送失败",
  "composer.reply": "回复", "composer.note": "内部备注", "composer.send": "发送", "composer.add_note": "添加备注",
  "composer.attach": "附件", "composer.remove": "移除",
  "composer.placeholder": "回复客户…（输入 / 使用快捷回复，回车发送）",
  "composer.note_placeholder": "仅客服可见的备注",
  "composer.hint": "Shift+回车 换行",
  "composer.window_closed": "当前无法回复：{reason}。仍可添加内部备注。",
  "contact.anonymous": "未知客户", "contact.first_seen": "首次联系 {time}",
  "contact.name": "姓名", "contact.email": "邮箱", "contact.phone": "电话",
  "contact.identities": "渠道身份", "contact.unreachable": "无法触达", "contact.unsubscribed": "已取消关注",
  "contact.subscription": "订阅状态", "contact.subscribed_all": "未退订任何消息。",
  "contact.tags": "标签", "contact.attributes": "自定义属性", "contact.attr_key": "属性名", "contact.attr_value": "值",
  "contact.add": "添加", "contact.remove_attr": "删除属性",
  "contact.conversations": "历史会话", "contact.tickets": "工单", "contact.no_tickets": "暂无工单。",
  "admin.unroutable": "无法投递的邮件", "admin.unroutable_hint": "这些邮件没有任何可用的发件人地址（From、Reply-To、Sender、Return-Path）。系统没有拒收，而是保存了下来；下载原始邮件可查看发件人。",
  "admin.unroutable_empty": "没有无法投递的邮件。", "admin.unroutable_raw": "原始邮件（.eml）", "admin.unroutable_dismiss": "忽略",
  "admin.unroutable_no_subject": "（无主题）", "admin.unroutable_received": "收到时间", "admin.unroutable_mail": "邮件",
  "admin.unroutable_size": "大小",
  "thread.view_html": "查看 HTML", "thread.hide_html": "隐藏 HTML", "thread.html_frame": "邮件的 HTML 版本（沙箱）",
  "thread.mail_warnings": "解析提示", "thread.raw_update": "原始数据（平台发送的原样）", "thread.raw_from": "原始发件人：{value}",
  "admin.agents": "客服账号", "admin.inboxes": "渠道", "admin.canned": "快捷回复",
  "admin.forbidden": "管理页面需要管理员权限。如需访问，请联系管理员。",
  "admin.display_name": "姓名", "admin.login": "账号", "admin.email": "邮箱", "admin.password": "密码（至少 8 位）",
  "admin.role": "角色", "admin.invite": "邀请客服", "admin.invited": "{login} 现在可以登录了。",
  "admin.deactivate": "停用", "admin.reactivate": "重新启用", "admin.saved": "已保存。",
  "admin.inbox_name": "名称", "admin.channel": "渠道类型", "admin.webhook": "Webhook 地址", "admin.active": "启用",
  "admin.disabled": "已停用", "admin.test": "测试连接", "admin.create_inbox": "接入渠道",
  "admin.inbox_ready": "渠道“{name}”已创建。",
  "admin.paste_webhook": "请把此 Webhook 地址填写到平台后台：",
  "admin.secrets_once": "请立即复制以下密钥，它们只显示一次。",
  "admin.shortcut": "快捷键", "admin.title": "标题", "admin.text": "内容", "admin.save": "保存", "admin.delete": "删除",
  "admin.add_canned": "新增快捷回复", "admin.confirm_delete": "删除 {name}？",
  "admin.canned_hint": "客服在回复框输入 / 加快捷键即可插入。变量：{{name}}、{{email}}、{{phone}}、{{agent}}。",
  "sim.title": "客户模拟器", "sim.hint": "以客户身份聊天。消息会像其他渠道一样进入收件箱，机器人和客服的回复会显示在这里。",
  "sim.none": "没有模拟器渠道。请运行 `scrm demo`，或创建类型为 memory 的渠道。",
  "sim.sender": "客户 ID", "sim.name": "客户姓名", "sim.default_name": "测试客户",
  "sim.placeholder": "以客户身份输入…",
  "time.now": "刚刚", "time.min": "{n} 分钟", "time.hour": "{n} 小时", "time.day": "{n} 天",
  "error.network": "无法连接服务器，请检查网络；已输入的内容不会丢失。",
  "error.http": "服务器错误", "error.notfound": "页面不存在。", "error.unexpected": "意外错误",
  "error.boot": "收件箱无法启动：",
  ...zhWecom, // WeCom admin
  ...zhWechat, // WeChat OA 群发 and 订阅通知
  ...zhMarketing, // contacts, segments, broadcasts
  ...zhCampaigns, // campaigns, QR codes, funnel, churn warning
  ...zhDesk, // tickets, knowledge base, desk settings, audit, reports, notifications
  ...zhWebchat, // web chat inbox settings
  ...zhAccess, // inbox membership
};
