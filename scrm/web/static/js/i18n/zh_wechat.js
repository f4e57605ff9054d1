// 微信公众号群发（群发）与订阅通知：广播编辑页的中文词典。
export const zhWechat = {
  "wx.title": "微信公众号发送方式", "wx.mode": "发送方式",
  "wx.mode.standard": "客服消息（48 小时内），窗口外有授权则发订阅通知",
  "wx.mode.mass": "群发（按 OpenID 列表 / 标签 / 全部粉丝）", "wx.mode.subscribe": "订阅通知（仅发给已授权的粉丝）",
  "wx.target": "群发对象", "wx.target.list": "受众中的粉丝（OpenID 列表，每批 1 万）", "wx.target.tag": "公众号标签",
  "wx.target.all": "全部粉丝", "wx.tag_id": "公众号标签 ID",
  "wx.template_id": "订阅通知模板 ID", "wx.url": "点击跳转链接（可选）",
  "wx.subscribe_hint": "只发给在弹窗中同意过该模板的粉丝；一次性订阅每次同意只能发一条，发出即用掉。",
  "wx.mass_hint": "群发是同一条消息发给所有人：不能使用 {{变量}}。每批带 clientmsgid，崩溃后重发也不会重复送达。",
  "wx.template_note": "模板消息只能用于服务通知（如订单、工单状态），微信禁止用于营销，因此广播不会使用模板消息。",
  "wx.quota.subscription": "群发额度（订阅号每天 1 次）：今天已用 {used}/{limit}，剩余 {remaining}。",
  "wx.quota.service": "群发额度（服务号每位粉丝每月 4 次）：本月已群发全部粉丝 {used}/{limit} 次；已用完额度的粉丝 {capped} 人（会被跳过）。",
  "wx.preview": "发送预览", "wx.preview_to": "预览给测试粉丝", "wx.preview_needs_openid": "请填写测试粉丝的 OpenID",
  "wx.preview_sent": "预览已提交给 {openid}", "wx.started_sendall": "群发已提交，结果会在微信回报后显示",
  "mk.reason.mass_quota": "本月群发额度已用完", "mk.reason.no_subscribe_consent": "未授权该订阅通知",
};
