// English dictionary. Keys are grouped by screen; {name} placeholders are filled as plain text.
import { enMarketing } from "./en_marketing.js";
import { enCampaigns } from "./en_campaigns.js";
import { enDesk } from "./en_desk.js";
import { enWecom } from "./en_wecom.js";
import { enWechat } from "./en_wechat.js";
import { enWebchat } from "./en_webchat.js";
import { enAccess } from "./en_access.js";
export const en = {
  "loading": "Loading…",
  "nav.inbox": "Inbox", "nav.admin": "Admin", "nav.simulator": "Customer simulator",
  "header.waiting": "Waiting: {n}", "header.waiting_hint": "Conversations waiting in the queue for an agent",
  "header.availability": "Availability", "header.logout": "Log out",
  "availability.online": "Online", "availability.away": "Away", "availability.offline": "Offline",
  "role.admin": "Admin", "role.agent": "Agent", "role.marketer": "Marketer",
  "live.connecting": "Connecting…", "live.live": "● Live", "live.reconnecting": "Reconnecting…",
  "login.subtitle": "Sign in to the team inbox", "login.name": "Login", "login.password": "Password",
  "login.submit": "Log in", "login.bad": "Wrong login or password.",
  "login.expired": "Your session has ended. Log in again — your unsent drafts are kept.",
  "tab.mine": "Mine", "tab.unassigned": "Unassigned", "tab.all": "All",
  "filter.status": "Status", "filter.all_status": "Any status", "filter.handler": "Handler", "filter.any_handler": "Any handler",
  "filter.inbox": "Inbox", "filter.any_inbox": "All inboxes", "filter.label": "Label",
  "list.search": "Search name, phone, email or message", "list.empty": "No conversations here.",
  "list.more": "Load more", "list.unassigned": "Unassigned", "list.waiting_since": "Waiting for a reply",
  "list.last_activity": "Last activity",
  "status.open": "Open", "status.pending": "Pending", "status.snoozed": "Snoozed", "status.resolved": "Resolved",
  "handler.bot": "Bot", "handler.queue": "Queue", "handler.human": "Agent",
  "priority.low": "Low", "priority.normal": "Normal", "priority.high": "High", "priority.urgent": "Urgent",
  "thread.pick": "Pick a conversation on the left.", "thread.older": "Load older messages",
  "thread.typing": "{name} is typing…", "thread.private": "Private note", "thread.edited": "edited",
  "thread.retry": "Retry", "thread.take_over": "Take over", "thread.hand_back": "Hand back to bot",
  "thread.resolve": "Resolve", "thread.reopen": "Reopen", "thread.assign": "Assign", "thread.unassigned": "Unassigned",
  "thread.priority": "Priority", "thread.labels": "Labels, comma separated", "thread.snooze": "Snooze",
  "thread.snoozed_until": "snoozed until {time}",
  "thread.attachment_image": "Image", "thread.attachment_file": "File", "thread.attachment_audio": "Audio",
  "thread.attachment_voice": "Voice message", "thread.attachment_video": "Video", "thread.attachment_sticker": "Sticker",
  "thread.attachment_pending": "not downloaded yet",
  "snooze.choose": "Snooze…", "snooze.1h": "1 hour", "snooze.4h": "4 hours", "snooze.24h": "1 day", "snooze.week": "1 week",
  "sender.bot": "Bot", "sender.agent": "Agent", "sender.system": "System",
  "delivery.queued": "Queued", "delivery.sending": "Sending", "delivery.sent": "Sent", "delivery.delivered": "Delivered",
  "delivery.read": "Read", "delivery.failed": "Failed",
  "composer.reply": "Reply", "composer.note": "Private note", "composer.send": "Send", "composer.add_note": "Add note",
  "composer.attach": "Attach", "composer.remove": "Remove",
  "composer.placeholder": "Reply to the customer… (type / for canned responses, Enter to send)",
  "composer.note_placeholder": "A note only agents can see",
  "composer.hint": "Shift+Enter for a new line",
  "composer.window_closed": "Replies are not possible right now: {reason}. You can still add a private note.",
  "contact.anonymous": "Unknown customer", "contact.first_seen": "Customer since {time}",
  "contact.name": "Name", "contact.email": "Email", "contact.phone": "Phone",
  "contact.identities": "Channels", "contact.unreachable": "Unreachable", "contact.unsubscribed": "Unsubscribed",
  "contact.subscription": "Subscriptions", "contact.subscribed_all": "No opt-outs.",
  "contact.tags": "Tags", "contact.attributes": "Attributes", "contact.attr_key": "key", "contact.attr_value": "value",
  "contact.add": "Add", "contact.remove_attr": "Remove attribute",
  "contact.conversations": "Conversations", "contact.tickets": "Tickets", "contact.no_tickets": "No tickets.",
  "admin.unroutable": "Unroutable mail", "admin.unroutable_hint": "Mail that arrived without any usable sender address (From, Reply-To, Sender, Return-Path). It was kept instead of refused; download the raw source to see who sent it.",
  "admin.unroutable_empty": "No unroutable mail.", "admin.unroutable_raw": "Raw source (.eml)", "admin.unroutable_dismiss": "Dismiss",
  "admin.unroutable_no_subject": "(no subject)", "admin.unroutable_received": "Received", "admin.unroutable_mail": "Mail",
  "admin.unroutable_size": "Size",
  "thread.view_html": "View HTML", "thread.hide_html": "Hide HTML", "thread.html_frame": "HTML version of the email (sandboxed)",
  "thread.mail_warnings": "Warnings", "thread.raw_update": "Raw update (as the platform sent it)", "thread.raw_from": "From as written: {value}",
  "admin.agents": "Agents", "admin.inboxes": "Inboxes", "admin.canned": "Canned responses",
  "admin.forbidden": "Admin pages need the admin role. Ask an administrator if you need access.",
  "admin.display_name": "Name", "admin.login": "Login", "admin.email": "Email", "admin.password": "Password (8+ characters)",
  "admin.role": "Role", "admin.invite": "Invite an agent", "admin.invited": "{login} can log in now.",
  "admin.deactivate": "Deactivate", "admin.reactivate": "Reactivate", "admin.saved": "Saved.",
  "admin.inbox_name": "Name", "admin.channel": "Channel", "admin.webhook": "Webhook URL", "admin.active": "Active",
  "admin.disabled": "Disabled", "admin.test": "Test connection", "admin.create_inbox": "Connect a channel",
  "admin.inbox_ready": "Inbox “{name}” is ready.",
  "admin.paste_webhook": "Paste this webhook URL into the platform's console:",
  "admin.secrets_once": "Copy these secrets now; they are shown only once.",
  "admin.shortcut": "Shortcut", "admin.title": "Title", "admin.text": "Text", "admin.save": "Save", "admin.delete": "Delete",
  "admin.add_canned": "Add a canned response", "admin.confirm_delete": "Delete {name}?",
  "admin.canned_hint": "Agents type / and the shortcut in the reply box. Variables: {{name}}, {{email}}, {{phone}}, {{agent}}.",
  "sim.title": "Customer simulator", "sim.hint": "Chat as a customer. Your messages arrive in the inbox like any channel; bot and agent replies show up here.",
  "sim.none": "No simulator inbox. Run `scrm demo` or create an inbox of type memory.",
  "sim.sender": "Customer id", "sim.name": "Customer name", "sim.default_name": "Test customer",
  "sim.placeholder": "Write as the customer…",
  "time.now": "now", "time.min": "{n} min", "time.hour": "{n} h", "time.day": "{n} d",
  "error.network": "Cannot reach the server. Check the connection; nothing you typed is lost.",
  "error.http": "Server error", "error.notfound": "This page does not exist.", "error.unexpected": "Unexpected error",
  "error.boot": "The inbox could not start:",
  ...enWecom, // WeCom admin
  ...enWechat, // WeChat OA 群发 and 订阅通知
  ...enMarketing, // contacts, segments, broadcasts
  ...enCampaigns, // campaigns, QR codes, funnel, churn warning
  ...enDesk, // tickets, knowledge base, desk settings, audit, reports, notifications
  ...enWebchat, // web chat inbox settings
  ...enAccess, // inbox membership
};
