// WeChat Official Account mass send (群发) and subscription messages: the broadcast composer's English words.
export const enWechat = {
  "wx.title": "WeChat Official Account delivery", "wx.mode": "Delivery mode",
  "wx.mode.standard": "Customer-service message (within 48 hours); subscription message outside it where consented",
  "wx.mode.mass": "Mass send (群发: OpenID list / tag / all followers)", "wx.mode.subscribe": "Subscription message (consenting followers only)",
  "wx.target": "Send to", "wx.target.list": "The audience's followers (OpenID list, batches of 10,000)", "wx.target.tag": "An account tag",
  "wx.target.all": "All followers", "wx.tag_id": "Account tag ID",
  "wx.template_id": "Subscription template ID", "wx.url": "Link when tapped (optional)",
  "wx.subscribe_hint": "Only followers who accepted this template in the popup get it; a one-time consent allows one message and is used up when sent.",
  "wx.mass_hint": "A mass send is one message for everybody: no {{variables}}. Each batch carries a clientmsgid, so a resend after a crash never reaches anyone twice.",
  "wx.template_note": "Template messages are for service notices only (orders, ticket updates): WeChat forbids them for marketing, so broadcasts never use them.",
  "wx.quota.subscription": "Mass-send quota (subscription account: once a day): used today {used}/{limit}, {remaining} left.",
  "wx.quota.service": "Mass-send quota (service account: 4 a month per follower): sent to all followers {used}/{limit} times this month; {capped} followers have used theirs up (they are skipped).",
  "wx.preview": "Send preview", "wx.preview_to": "Preview to a test follower", "wx.preview_needs_openid": "Enter the test follower's OpenID",
  "wx.preview_sent": "Preview submitted to {openid}", "wx.started_sendall": "Mass send submitted; results appear when WeChat reports them",
  "mk.reason.mass_quota": "monthly mass-send quota used up", "mk.reason.no_subscribe_consent": "no consent to this subscription message",
};
