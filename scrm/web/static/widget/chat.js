// The web chat (widget iframe and H5 page): session, history, live messages, forms, buttons, CSAT.
import { h, replace } from "../js/dom.js";
import { translator } from "./chat_i18n.js";
import { Connection } from "./chat_net.js";
import { choicesEl, fmtBytes, formEl, messageEl } from "./chat_view.js";

const cfg = JSON.parse(document.getElementById("scrm-chat-config").textContent);
const t = translator(cfg.lang);
const BASE = `/chat/${cfg.inbox}`;
const KEY = `scrm.chat.${cfg.inbox}.token`;
const widget = cfg.mode === "widget";
const parentOrigin = widget ? (location.ancestorOrigins?.[0] || (document.referrer ? new URL(document.referrer).origin : null)) : null;
const SHOWN_SENT = 200; // the newest message ids this tab has, sent on (re)connect: a reply that committed below
// the newest one while the tab was away is shown, and nothing it has is sent again
const st = { token: null, msgs: new Map(), pending: new Map(), lastId: 0, readUpto: 0, conv: null, open: !widget,
  unread: 0, readSent: 0, identity: {}, started: false, view: "chat", rated: false, conn: null, visitor: {} };

document.documentElement.style.setProperty("--brand", cfg.color || "#2563eb");
document.documentElement.style.setProperty("--on-brand", onBrand(cfg.color || "#2563eb"));

function onBrand(hex) { // readable text on the brand colour (WCAG relative luminance)
  const n = parseInt(hex.slice(1), 16);
  const [r, g, b] = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map((v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 ? "#111827" : "#ffffff";
}
const root = document.getElementById("chat");
const statusLine = h("p.status", { "data-testid": "chat-status-line" });
const notice = h("div.notice", { role: "status", "aria-live": "polite", "data-testid": "chat-notice", hidden: true });
const log = h("div.log", { role: "log", "aria-live": "polite", "aria-label": t("log"), "data-testid": "chat-log", tabindex: "0" });
const typing = h("div.typing", { "data-testid": "chat-typing", "aria-live": "polite", hidden: true });
const footer = h("footer.foot");
const headButtons = h("div.head-buttons");
root.append(...[h("header.head", {}, h("div.titles", {}, h("h1", { text: cfg.title || "Chat", "data-testid": "chat-title" }), statusLine), headButtons),
  cfg.banner ? h("div.banner", { "data-testid": "chat-banner", text: cfg.banner }) : null, notice, h("main.body", {}, log, typing), footer].filter(Boolean));
if (cfg.transcript) headButtons.append(h("button.icon", { type: "button", title: t("transcript"), "aria-label": t("transcript"), text: "✉",
  "data-testid": "chat-transcript", on: { click: showTranscript } }));
if (widget) headButtons.append(h("button.icon", { type: "button", "aria-label": t("close"), title: t("close"), text: "✕",
  "data-testid": "chat-close", on: { click: () => toParent({ scrm: "close" }) } }));
statusLine.textContent = cfg.online ? t("online") : cfg.back_text ? t("back_at", { when: cfg.back_text }) : t("offline");
statusLine.classList.toggle("is-online", Boolean(cfg.online));

function toParent(msg) {
  if (widget && parentOrigin) parent.postMessage(msg, parentOrigin);
}

function headers() {
  return st.token ? { "X-Scrm-Visitor": st.token } : {};
}

async function call(path, body, init = {}) {
  const r = await fetch(BASE + path, { method: "POST", credentials: "same-origin", ...init,
    headers: init.body instanceof FormData ? headers() : { "Content-Type": "application/json", ...headers() },
    body: init.body ?? JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(data.error?.message || "HTTP " + r.status), { status: r.status, code: data.error?.code });
  return data;
}

function clientId() {
  return (crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36)).replace(/[^A-Za-z0-9_-]/g, "");
}

// ---- messages --------------------------------------------------------------------------------

function addMessages(items) {
  let incoming = 0;
  for (const m of items) {
    if (!m.id) continue;
    const known = st.msgs.has(m.id);
    if (m.client_id) st.pending.delete(m.client_id);
    st.msgs.set(m.id, m); // the server's copy replaces what was shown while sending (files, status)
    st.lastId = Math.max(st.lastId, m.id);
    if (!known && m.from !== "visitor") incoming += 1;
  }
  if (incoming && !st.open) {
    st.unread += incoming;
    toParent({ scrm: "unread", count: st.unread });
  }
  if (incoming) typing.hidden = true;
  render();
  readSoon();
}

function render() {
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const all = [...st.msgs.values()].sort((a, b) => a.id - b.id);
  const ctx = { t, lang: cfg.lang, readUpto: st.readUpto, onRetry: retry, onChoice: sendChoice };
  const nodes = [];
  if (cfg.greeting) nodes.push(messageEl({ from: "bot", text: cfg.greeting, greeting: true }, ctx));
  for (const m of all) nodes.push(messageEl(m, ctx));
  for (const m of st.pending.values()) nodes.push(messageEl(m, ctx));
  const last = all[all.length - 1];
  if (last && last.from !== "visitor" && last.choices?.length && !st.pending.size && st.view === "chat") {
    const csat = last.choices.every((c) => c.payload.startsWith("csat:"));
    if (!(csat && st.rated)) nodes.push(choicesEl(last, ctx));
  }
  replace(log, nodes);
  if (nearBottom || !log.dataset.scrolled) {
    log.scrollTop = log.scrollHeight;
    log.dataset.scrolled = "1";
  }
}

function send(frame) {
  const m = { client_id: frame.client_id, from: "visitor", text: frame.text, at: new Date().toISOString() };
  st.pending.set(frame.client_id, m);
  render();
  st.conn.sendMessage({ type: "message", lang: cfg.lang, source: cfg.source || undefined, ...frame });
}

function sendText(text) {
  if (text.trim()) send({ client_id: clientId(), text: text.trim() });
}

function sendChoice(c) {
  if (c.payload.startsWith("csat:")) st.rated = true;
  send({ client_id: clientId(), text: c.label, choice: c.payload });
}

function retry(cid) {
  const m = st.pending.get(cid);
  if (!m) return;
  m.failed = false;
  render();
  st.conn.sendMessage({ type: "message", client_id: cid, text: m.text, lang: cfg.lang });
}

function onFrame(data) {
  if (data.type === "messages") addMessages(data.items || []);
  else if (data.type === "ack") {
    const m = st.pending.get(data.client_id);
    if (m && data.id && !st.msgs.has(data.id)) {
      st.pending.delete(data.client_id);
      addMessages([{ ...m, id: data.id, conversation_id: data.conversation_id }]);
    } else if (m) {
      st.pending.delete(data.client_id);
      render();
    }
  } else if (data.type === "error") {
    const m = st.pending.get(data.client_id);
    if (m) m.failed = true;
    showNotice(t("error", { message: data.message || data.code }));
    render();
  } else if (data.type === "typing") {
    typing.textContent = t("typing", { name: data.name || t("agent") });
    typing.hidden = false;
    clearTimeout(onFrame.typingTimer);
    onFrame.typingTimer = setTimeout(() => (typing.hidden = true), 5000);
  } else if (data.type === "conversation" && data.conversation) {
    st.conv = data.conversation;
    if (st.conv.agent_read_upto && st.conv.agent_read_upto !== st.readUpto) {
      st.readUpto = st.conv.agent_read_upto;
      render();
    }
  }
}

let readTimer = null;
function readSoon() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (!st.open || document.visibilityState !== "visible" || !st.conn) return;
    let upto = 0;
    for (const m of st.msgs.values()) if (m.from !== "visitor" && m.id > upto) upto = m.id;
    if (upto > st.readSent) {
      st.readSent = upto;
      st.conn.signal({ type: "read", upto });
    }
  }, 700);
}

function showNotice(text) {
  notice.textContent = text || "";
  notice.hidden = !text;
}

// ---- composer and forms ----------------------------------------------------------------------

function composer() {
  const input = h("textarea", { rows: 1, placeholder: t("input"), "aria-label": t("input_label"), "data-testid": "chat-input",
    maxlength: cfg.max_chars });
  let lastTyping = 0;
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendText(input.value);
      input.value = "";
    }
  });
  input.addEventListener("input", () => {
    if (Date.now() - lastTyping > 2000 && input.value) {
      lastTyping = Date.now();
      st.conn?.signal({ type: "typing" });
    }
  });
  const file = h("input", { type: "file", hidden: true, accept: (cfg.attachments?.types || []).join(","), "data-testid": "chat-file-input" });
  file.addEventListener("change", () => {
    if (file.files[0]) upload(file.files[0]);
    file.value = "";
  });
  const attach = h("button.icon", { type: "button", "aria-label": t("attach"), title: t("attach"), "data-testid": "chat-attach",
    on: { click: () => file.click() } }, clipIcon());
  const sendBtn = h("button.send", { type: "button", "aria-label": t("send"), "data-testid": "chat-send", text: t("send"),
    on: { click: () => { sendText(input.value); input.value = ""; input.focus(); } } });
  return h("div.composer", {}, attach, file, input, sendBtn);
}

async function upload(f) {
  const max = cfg.attachments?.max_bytes || 0;
  if (max && f.size > max) return showNotice(t("file_too_large", { max: fmtBytes(max) }));
  const cid = clientId();
  st.pending.set(cid, { client_id: cid, from: "visitor", text: f.name, at: new Date().toISOString() });
  render();
  const form = new FormData();
  form.append("client_id", cid);
  form.append("file", f, f.name);
  try {
    onFrame({ type: "ack", ...(await call("/upload", null, { body: form })) });
  } catch (err) {
    st.pending.delete(cid);
    render();
    showNotice(err.code === "unsupported_type" ? t("file_type") : t("error", { message: err.message }));
  }
}

function showView(view) {
  st.view = view;
  if (view === "prechat") {
    replace(footer, formEl(t("prechat_title"), cfg.prechat.fields, t("start"), async (values) => {
      await call("/prechat", { fields: values, lang: cfg.lang, source: cfg.source || undefined });
      showView("chat");
    }, { t }, "prechat"));
  } else if (view === "offline") {
    const fields = [{ name: "email", label: t("offline_email"), type: "email", required: true, value: st.visitor.email },
      { name: "name", label: t("offline_name"), type: "text", value: st.visitor.name },
      { name: "message", label: t("offline_message"), type: "textarea", required: true }];
    replace(footer, h("div.away", { "data-testid": "chat-away", text: cfg.away }), formEl(t("offline_title"), fields, t("offline_send"), async (v) => {
      await call("/prechat", { fields: { email: v.email, name: v.name || undefined }, offline: true, lang: cfg.lang });
      st.visitor.email = v.email;
      sendText(v.message);
      showView("chat");
      showNotice(t("offline_done"));
    }, { t }, "offline"));
  } else if (view === "blocked") {
    replace(footer, h("p.blocked", { role: "alert", "data-testid": "chat-blocked", text: t("blocked") }));
  } else if (view === "identity") {
    replace(footer, h("p.blocked", { role: "alert", "data-testid": "chat-identity-failed", text: t("identity_failed") }));
  } else {
    replace(footer, composer());
    if (st.open) footer.querySelector("textarea")?.focus();
  }
  render();
}

function showTranscript() {
  const box = formEl(t("transcript"), [{ name: "email", label: t("email_label"), type: "email", required: true, value: st.visitor.email }],
    t("transcript_send"), async (v) => {
      await call("/transcript", { email: v.email, lang: cfg.lang });
      showView(st.view === "transcript" ? "chat" : st.view);
      showNotice(t("transcript_done", { email: v.email }));
    }, { t }, "transcript");
  box.append(h("button", { type: "button", text: t("cancel"), on: { click: () => showView("chat") } }));
  st.view = "transcript";
  replace(footer, box);
  box.querySelector("input")?.focus();
}

function clipIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M21 11.5l-8.6 8.6a5 5 0 0 1-7.1-7.1l8.6-8.6a3.3 3.3 0 0 1 4.7 4.7l-8.6 8.6a1.7 1.7 0 0 1-2.4-2.4l7.9-7.9");
  svg.append(path);
  return svg;
}

// ---- session ---------------------------------------------------------------------------------

async function startSession() {
  if (st.started) return;
  st.started = true;
  const saved = widget ? localStorage.getItem(KEY) : null;
  let data;
  try {
    data = await call("/session", { mode: cfg.mode, lang: cfg.lang, token: saved || undefined, ...st.identity });
  } catch (err) {
    st.started = false;
    if (err.code === "blocked") return showView("blocked");
    if (err.code === "bad_identity" || err.code === "identity_required") return showView("identity");
    showNotice(t("error", { message: err.message }));
    setTimeout(startSession, 5000);
    return;
  }
  st.token = data.token;
  if (widget && data.token) localStorage.setItem(KEY, data.token);
  st.visitor = data.visitor || {};
  st.conv = data.conversation;
  st.readUpto = data.conversation?.agent_read_upto || 0;
  addMessages(data.messages || []);
  const fresh = !(data.messages || []).length;
  showView(data.prechat_needed ? "prechat" : fresh && !cfg.online && cfg.offline_email ? "offline" : "chat");
  st.conn?.stop();
  st.conn = new Connection(BASE, headers, {
    frame: onFrame, lastId: () => st.lastId,
    shownIds: () => [...st.msgs.keys()].sort((a, b) => b - a).slice(0, SHOWN_SENT),
    status: (s) => showNotice(s === "reconnecting" ? t("reconnecting") : s === "polling" && !notice.hidden ? t("polling") : ""),
    expired: () => { localStorage.removeItem(KEY); st.started = false; showNotice(t("expired")); startSession(); },
    refused: () => showView("blocked"),
  });
  if (new URLSearchParams(location.search).get("transport") === "poll") st.conn.mode = "poll";
  st.conn.start();
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    readSoon();
    st.conn?.signal({ type: "sync" });
  }
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && widget) toParent({ scrm: "close" });
});

if (widget) {
  window.addEventListener("message", (e) => {
    if (e.source !== parent || (parentOrigin && e.origin !== parentOrigin)) return;
    const d = e.data || {};
    if (d.scrm === "identity") {
      const next = d.identity || {};
      const changed = JSON.stringify(next) !== JSON.stringify(st.identity);
      st.identity = next;
      if ("open" in d) st.open = Boolean(d.open);
      if (changed && st.token !== null) { // the site signed its user in (or out): their own chat
        st.conn?.stop();
        st.msgs.clear();
        st.pending.clear();
        st.lastId = 0;
        st.started = false;
      }
      startSession();
    } else if (d.scrm === "open") {
      st.open = Boolean(d.open);
      if (st.open) {
        st.unread = 0;
        footer.querySelector("textarea, input")?.focus();
        readSoon();
      }
    }
  });
  parent.postMessage({ scrm: "ready" }, parentOrigin || "*");
  setTimeout(startSession, 1500); // a parent that never answers (loader blocked) still gets a chat
} else {
  const q = new URLSearchParams(location.search);
  for (const k of ["identifier", "identifier_hash", "name", "email"]) if (q.get(k)) st.identity[k] = q.get(k);
  startSession();
}
