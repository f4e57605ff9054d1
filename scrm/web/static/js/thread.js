// The open conversation: header with actions, the thread (live, "load older"), typing, and the composer.
import { get, patch, post } from "./api.js";
import { clear, debounce, h, replace, safeUrl, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { emit, state } from "./state.js";
import { toast } from "./toast.js";
import { Composer } from "./composer.js";

const SNOOZE_HOURS = [["", "snooze.choose"], ["1", "snooze.1h"], ["4", "snooze.4h"], ["24", "snooze.24h"], ["168", "snooze.week"]];

export class ThreadView {
  constructor({ onContact, onConversation }) {
    this.onContact = onContact;
    this.onConversation = onConversation;
    this.id = null;
    this.conv = null;
    this.messages = new Map(); // id -> message
    this.olderCursor = null;
    this.typingTimer = null;
    this.head = h("div.thread-head", { "data-testid": "thread-head" });
    this.list = h("div.messages", { "data-testid": "messages", "aria-live": "polite" });
    this.olderBtn = h("button.link.older", { "data-testid": "load-older", text: t("thread.older"), hidden: true,
      on: { click: () => this.loadOlder() } });
    this.typing = h("div.typing", { "data-testid": "typing", hidden: true });
    this.composer = new Composer(this);
    this.body = h("div.thread-body", {}, this.olderBtn, this.list);
    this.el = h("section.thread-pane", { "data-testid": "thread" }, h("div.empty", { text: t("thread.pick") }));
    this.refreshMetaSoon = debounce(() => this.refreshMeta(), 150);
    this.markReadSoon = debounce(() => this.markRead(), 500);
  }

  async open(id) {
    if (this.id === id && this.conv) return;
    this.id = id;
    this.conv = null;
    this.messages.clear();
    replace(this.el, h("div.loading", { text: t("loading") }));
    await this.load(true);
  }

  close() {
    this.id = null;
    this.conv = null;
    replace(this.el, h("div.empty", { text: t("thread.pick") }));
  }

  destroy() {
    clearTimeout(this.typingTimer);
  }

  async load(first) {
    const id = this.id;
    try {
      const data = await get(`/conversations/${id}`);
      if (id !== this.id) return;
      for (const m of data.messages) this.messages.set(m.id, m);
      if (first) this.olderCursor = data.older_cursor;
      delete data.messages;
      this.conv = data;
      if (first) {
        replace(this.el, this.head, this.body, this.typing, this.composer.el);
        this.composer.bind(data);
      }
      this.renderHead();
      this.composer.setConversation(data);
      this.renderMessages(first);
      this.onContact(data.contact_id);
      if (first) emit("conversation-opened", id); // its notifications are read now
      if (data.unread_count) this.markRead();
    } catch (err) {
      if (id !== this.id) return;
      replace(this.el, h("div.page-error", { role: "alert", "data-testid": "thread-error", text: err.message }));
    }
  }

  /** After a reconnect: fetch the latest page again so nothing missed stays missing. */
  resync() {
    if (this.id) this.load(false);
  }

  async refreshMeta() {
    if (!this.id) return;
    const id = this.id;
    try {
      const data = await get(`/conversations/${id}?limit=1`);
      if (id !== this.id) return;
      delete data.messages;
      this.conv = data;
      this.renderHead();
      this.composer.setConversation(data);
    } catch {
      /* the next event or reconnect retries */
    }
  }

  async markRead() {
    if (!this.id || document.visibilityState !== "visible") return;
    try {
      await post(`/conversations/${this.id}/read`);
    } catch {
      /* harmless */
    }
  }

  async loadOlder() {
    if (!this.olderCursor) return;
    const id = this.id;
    try {
      const data = await get(`/conversations/${id}/messages?before=${this.olderCursor}&limit=50`);
      if (id !== this.id) return;
      for (const m of data.items) this.messages.set(m.id, m);
      this.olderCursor = data.older_cursor;
      const before = this.body.scrollHeight;
      this.renderMessages(false);
      this.body.scrollTop = this.body.scrollHeight - before; // keep the reader's place
    } catch (err) {
      toast(err.message);
    }
  }

  onEvent(frame) {
    const d = frame.data || {};
    if (!this.id || d.conversation_id !== this.id) return;
    if (frame.name === "conversation.typing") {
      if (d.agent_id !== state.me.id) this.showTyping(d.agent_name);
      return;
    }
    if (d.message) {
      this.upsertMessage(d.message);
      if (d.message.direction === "in") this.markReadSoon();
    }
    if (frame.name.startsWith("conversation.") || (frame.name === "message.created" && d.direction === "in")) {
      this.refreshMetaSoon(); // handler, assignee, status and the reply window may have changed
    }
  }

  showTyping(name) {
    this.typing.textContent = t("thread.typing", { name });
    this.typing.hidden = false;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => (this.typing.hidden = true), 4000);
  }

  upsertMessage(m) {
    if (!this.conv || m.conversation_id !== this.id) return;
    const isNew = !this.messages.has(m.id);
    this.messages.set(m.id, m);
    const existing = this.list.querySelector(`[data-id="${m.id}"]`);
    if (existing) {
      existing.replaceWith(this.messageEl(m));
      return;
    }
    const nearBottom = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 120;
    const later = [...this.list.children].find((el) => Number(el.dataset.id) > m.id);
    this.list.insertBefore(this.messageEl(m), later || null);
    if (isNew && (nearBottom || m.sender_agent_id === state.me.id)) this.body.scrollTop = this.body.scrollHeight;
  }

  renderMessages(scrollToEnd) {
    const sorted = [...this.messages.values()].sort((a, b) => a.id - b.id);
    replace(this.list, sorted.map((m) => this.messageEl(m)));
    this.olderBtn.hidden = !this.olderCursor;
    if (scrollToEnd) this.body.scrollTop = this.body.scrollHeight;
  }

  senderName(m) {
    if (m.sender_kind === "contact") return this.conv?.contact?.name || t("contact.anonymous");
    if (m.sender_kind === "bot") return t("sender.bot");
    if (m.sender_kind === "agent") return state.agents.get(m.sender_agent_id)?.display_name || t("sender.agent");
    return t("sender.system");
  }

  messageEl(m) {
    const kind = m.sender_kind;
    const note = m.private && kind !== "system";
    const el = h("div.msg", { "data-testid": "msg", "data-id": m.id, "data-kind": kind, "data-status": m.delivery_status || "",
      class: [`kind-${kind}`, m.direction, note ? "note" : ""].join(" ") });
    if (kind === "system") {
      el.append(h("span.system-text", { text: m.text || "" }), h("time", { text: fmtTime(m.created_at) }));
      return el;
    }
    const bubble = h("div.bubble", {},
      h("div.sender", {}, h("span", { text: this.senderName(m) }), note ? h("span.note-tag", { text: t("thread.private") }) : null),
      m.text ? h("div.text", { "data-testid": "msg-text", text: m.text }) : null,
      (m.attachments || []).map((a) => attachmentEl(a)),
      (m.choices || []).length ? h("div.choices", {}, m.choices.map((c) => h("span.choice", { text: c.label }))) : null,
      mailDetails(m));
    const meta = h("div.meta", {}, h("time", { text: fmtTime(m.created_at), title: fmtTime(m.created_at, { full: true }) }),
      m.edited ? h("span.edited", { text: t("thread.edited") }) : null);
    if (m.direction === "out" && !m.private && m.delivery_status) {
      meta.append(h("span.delivery", { "data-testid": "delivery", class: m.delivery_status, text: t("delivery." + m.delivery_status) }));
      if (m.delivery_status === "failed") {
        meta.append(h("span.delivery-error", { "data-testid": "delivery-error", text: m.delivery_error || "" }),
          h("button.link", { "data-testid": "retry", text: t("thread.retry"), on: { click: () => this.retry(m) } }));
      }
    }
    el.append(bubble, meta);
    return el;
  }

  async retry(m) {
    try {
      this.upsertMessage(await post(`/messages/${m.id}/retry`));
    } catch (err) {
      toast(err.message);
    }
  }

  async act(fn) {
    try {
      const detail = await fn();
      if (detail && detail.id === this.id) {
        delete detail.messages;
        this.conv = detail;
        this.renderHead();
        this.composer.setConversation(detail);
        this.onConversation(detail);
      }
    } catch (err) {
      toast(err.message);
      this.renderHead();
    }
  }

  renderHead() {
    const c = this.conv;
    if (!c) return;
    const id = c.id;
    const name = c.contact?.name || c.contact?.email || c.contact?.phone || t("contact.anonymous");
    const agents = [...state.agents.values()].filter((a) => a.active && a.role !== "marketer");
    const assign = select([["", t("thread.unassigned")], ...agents.map((a) => [a.id, a.display_name])], c.assignee_id ?? "",
      { "data-testid": "assign", "aria-label": t("thread.assign") });
    assign.addEventListener("change", () => this.act(() =>
      post(`/conversations/${id}/assign`, { assignee_id: assign.value ? Number(assign.value) : null })));
    const status = select(["open", "pending", "snoozed", "resolved"].map((s) => [s, t("status." + s)]), c.status,
      { "data-testid": "status", "aria-label": t("filter.status") });
    status.addEventListener("change", () => this.act(() => post(`/conversations/${id}/status`, { status: status.value })));
    const priority = select(["low", "normal", "high", "urgent"].map((p) => [p, t("priority." + p)]), c.priority,
      { "data-testid": "priority", "aria-label": t("thread.priority") });
    priority.addEventListener("change", () => this.act(() => patch(`/conversations/${id}`, { priority: priority.value })));
    const labels = h("input.labels", { value: (c.labels || []).join(", "), placeholder: t("thread.labels"), "data-testid": "labels" });
    labels.addEventListener("change", () => this.act(() =>
      patch(`/conversations/${id}`, { labels: labels.value.split(/[,，]/).map((s) => s.trim()).filter(Boolean) })));
    const snooze = select(SNOOZE_HOURS.map(([v, k]) => [v, t(k)]), "", { "data-testid": "snooze", "aria-label": t("thread.snooze") });
    snooze.addEventListener("change", () => {
      if (!snooze.value) return;
      const until = new Date(Date.now() + Number(snooze.value) * 3600 * 1000).toISOString();
      this.act(() => post(`/conversations/${id}/status`, { status: "snoozed", snoozed_until: until }));
    });
    const buttons = [];
    if (c.handler !== "human") buttons.push(h("button.primary", { "data-testid": "take-over", text: t("thread.take_over"),
      on: { click: () => this.act(() => post(`/conversations/${id}/handler`, { handler: "human" })) } }));
    if (c.handler !== "bot") buttons.push(h("button", { "data-testid": "hand-back", text: t("thread.hand_back"),
      on: { click: () => this.act(() => post(`/conversations/${id}/handler`, { handler: "bot" })) } }));
    buttons.push(h("a.button", { href: `/tickets/new?conversation_id=${id}`, "data-link": "", "data-testid": "open-ticket",
      text: t("thread.open_ticket") }));
    if (c.channel_type === "web") {
      // Web chat visitors can be blocked: their open chats close and they cannot write again until unblocked.
      const blocked = !!c.identity?.blocked;
      buttons.push(h("button", { "data-testid": blocked ? "unblock-visitor" : "block-visitor", class: blocked ? "" : "danger",
        text: t(blocked ? "thread.unblock_visitor" : "thread.block_visitor"), on: { click: () => {
          if (!blocked && !confirm(t("thread.block_confirm", { name }))) return;
          this.act(async () => {
            await post(`/webchat/conversations/${id}/${blocked ? "unblock" : "block"}`);
            return get(`/conversations/${id}`);
          });
        } } }));
    }
    buttons.push(c.status === "resolved"
      ? h("button", { "data-testid": "reopen", text: t("thread.reopen"), on: { click: () => this.act(() => post(`/conversations/${id}/status`, { status: "open" })) } })
      : h("button", { "data-testid": "resolve", text: t("thread.resolve"), on: { click: () => this.act(() => post(`/conversations/${id}/status`, { status: "resolved" })) } }));
    replace(this.head,
      h("div.head-line", {},
        channelIcon(c.channel_type, 20),
        h("h2", { "data-testid": "thread-title", text: name }),
        h("span.muted", { text: c.inbox_name || "" }),
        h("span.chip", { "data-testid": "handler", class: "handler-" + c.handler, text: t("handler." + c.handler) }),
        h("span.chip", { "data-testid": "conv-status", text: t("status." + c.status) }),
        c.snoozed_until ? h("span.muted", { text: t("thread.snoozed_until", { time: fmtTime(c.snoozed_until) }) }) : null),
      h("div.actions", {}, buttons, assign, status, snooze, priority, labels));
  }
}

// A message's extras: the From header as written (when the reply goes elsewhere), decoding warnings, and
// its HTML version. That HTML is untrusted: it is never put into this page, only loaded by URL into a
// sandboxed frame (no scripts, no same origin) from an endpoint that serves it sanitized with a CSP sandbox.
function mailDetails(m) {
  const parts = [];
  if (m.raw_from && m.raw_from.length) {
    parts.push(h("p.muted.raw-from", { "data-testid": "raw-from", text: t("thread.raw_from", { value: m.raw_from.join(", ") }) }));
  }
  if (m.warnings && m.warnings.length) {
    parts.push(h("details.mail-warnings", { "data-testid": "mail-warnings" }, h("summary", { text: t("thread.mail_warnings") }),
      h("ul", {}, m.warnings.map((w) => h("li", { text: w })))));
  }
  if (m.raw_update) {
    parts.push(h("details.raw-update", { "data-testid": "raw-update" }, h("summary", { text: t("thread.raw_update") }),
      h("pre", { text: JSON.stringify(m.raw_update, null, 2) })));
  }
  if (m.has_html) {
    const holder = h("div.mail-html");
    const toggle = h("button.link", { "data-testid": "view-html", text: t("thread.view_html") });
    toggle.addEventListener("click", () => {
      if (holder.firstChild) {
        replace(holder);
        toggle.textContent = t("thread.view_html");
        return;
      }
      replace(holder, h("iframe", { "data-testid": "html-frame", sandbox: "allow-popups allow-popups-to-escape-sandbox",
        referrerpolicy: "no-referrer", title: t("thread.html_frame"), src: `/api/v1/messages/${m.id}/html` }));
      toggle.textContent = t("thread.hide_html");
    });
    parts.push(toggle, holder);
  }
  return parts.length ? h("div.mail-details", {}, parts) : null;
}

function attachmentEl(a) {
  const src = a.storage_key ? "/files/" + a.storage_key.split("/").map(encodeURIComponent).join("/") : safeUrl(a.url);
  const label = a.filename || t("thread.attachment_" + (a.kind || "file"));
  if (!src) return h("div.attachment.missing", { text: label + " · " + t("thread.attachment_pending") });
  if (a.kind === "image" || a.kind === "sticker") {
    return h("a.attachment.image", { href: src, target: "_blank", rel: "noopener noreferrer" },
      h("img", { src, alt: label, loading: "lazy" }));
  }
  if (a.kind === "audio" || a.kind === "voice") return h("audio", { controls: true, src, preload: "none" });
  if (a.kind === "video") return h("video", { controls: true, src, preload: "none" });
  return h("a.attachment.file", { href: src, target: "_blank", rel: "noopener noreferrer", download: a.filename || "" }, "📎 ", label);
}
