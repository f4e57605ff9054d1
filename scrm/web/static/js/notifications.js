// Notifications: the bell with the unread count, its list, the tab-title badge, browser notifications
// (asked for on a click) and an optional sound. New ones arrive on the live socket (notification.created).
import { api, get, post, qs } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtAgo, t } from "./i18n.js";
import { navigate } from "./router.js";
import { on, state } from "./state.js";
import { toast } from "./toast.js";

const BASE_TITLE = "scrm";
const model = { items: [], unread: 0, loaded: false, prefs: { sound: false, browser: false } };
let bellEls = null;
let wired = false;

/** The text of a notification in the agent's language (contact names and snippets stay text). */
export function describe(n) {
  const d = n.data || {};
  const vars = { contact: d.contact || t("contact.anonymous"), by: d.by || t("sender.agent"), count: d.count || 1,
    kind: d.sla_kind ? t("notif.sla." + d.sla_kind) : "", minutes: d.minutes_left ?? "" };
  const key = n.kind === "replied" && (d.count || 1) > 1 ? "notif.replied_many" : "notif." + n.kind;
  const names = (d.contacts || []).map((c) => c.name || `#${c.id}`).join("、");
  return { title: t(key, vars), body: d.snippet || d.preview || names };
}

function target(n) {
  if (n.kind === "churn_risk") return "/campaigns/churn";
  if (n.conversation_id) return "/conversations/" + n.conversation_id;
  if (n.ticket_id) return "/tickets/" + n.ticket_id;
  return "/notifications";
}

function renderTitle() {
  document.title = model.unread ? `(${model.unread > 99 ? "99+" : model.unread}) ${BASE_TITLE}` : BASE_TITLE;
}

function renderBell() {
  renderTitle();
  if (!bellEls) return;
  bellEls.count.textContent = model.unread > 99 ? "99+" : String(model.unread);
  bellEls.count.hidden = model.unread === 0;
  bellEls.button.setAttribute("aria-label", t("notif.bell", { n: model.unread }));
  if (!bellEls.panel.hidden) renderPanel();
}

async function load() {
  try {
    const data = await get("/notifications?limit=20");
    model.items = data.items;
    model.unread = data.unread;
    model.loaded = true;
    renderBell();
  } catch {
    /* the next live event or reconnect retries */
  }
}

async function loadPrefs() {
  try {
    model.prefs = (await get("/me/preferences")).notify;
  } catch {
    /* defaults: no sound, no browser notifications */
  }
}

async function markRead(body) {
  try {
    const res = await post("/notifications/read", body);
    model.unread = res.unread;
    const ids = body.ids ? new Set(body.ids) : null;
    for (const n of model.items) {
      if (body.all || (ids && ids.has(n.id)) || (body.conversation_id && n.conversation_id === body.conversation_id)) n.read = true;
    }
    renderBell();
  } catch (err) {
    toast(err.message);
  }
}

function itemEl(n, { onOpen } = {}) {
  const { title, body } = describe(n);
  return h("li.notif", { class: n.read ? "read" : "unread", "data-testid": "notification", "data-kind": n.kind, "data-id": n.id,
    tabindex: 0, on: { click: () => open(n, onOpen), keydown: (e) => e.key === "Enter" && open(n, onOpen) } },
    h("div.notif-title", {}, h("span.notif-dot", { "aria-hidden": "true" }), h("strong", { text: title }),
      h("span.when", { text: fmtAgo(n.created_at) })),
    body ? h("div.notif-body", { text: body }) : null);
}

function open(n, after) {
  if (!n.read) markRead({ ids: [n.id] });
  if (bellEls) bellEls.panel.hidden = true;
  after?.();
  navigate(target(n));
}

function renderPanel() {
  const { panel } = bellEls;
  const permission = "Notification" in window ? Notification.permission : "unsupported";
  const browserBtn = h("button.link", { "data-testid": "notif-enable-browser",
    text: permission === "granted" && model.prefs.browser ? t("notif.browser_on") : t("notif.browser_enable"),
    disabled: permission === "denied" || permission === "unsupported", on: { click: toggleBrowser } });
  const sound = h("label.notif-sound", {}, h("input", { type: "checkbox", checked: model.prefs.sound, "data-testid": "notif-sound",
    on: { change: (e) => savePrefs({ sound: e.target.checked }) } }), " ", t("notif.sound"));
  replace(panel,
    h("div.notif-head", {}, h("strong", { text: t("notif.title") }), h("div.spacer"),
      h("button.link", { "data-testid": "notif-read-all", text: t("notif.read_all"), disabled: model.unread === 0,
        on: { click: () => markRead({ all: true }) } })),
    h("ul.notif-list", { "data-testid": "notif-list" }, model.items.length ? model.items.map((n) => itemEl(n))
      : h("li.empty", { text: t("notif.none") })),
    h("div.notif-foot", {}, browserBtn, sound, permission === "denied" ? h("small.muted", { text: t("notif.browser_denied") }) : null,
      h("a", { href: "/notifications", "data-link": "", text: t("notif.all"), on: { click: () => (panel.hidden = true) } })));
}

async function savePrefs(change) {
  model.prefs = { ...model.prefs, ...change };
  try {
    await api("PUT", "/me/preferences", { notify: model.prefs });
  } catch (err) {
    toast(err.message);
  }
  if (bellEls && !bellEls.panel.hidden) renderPanel();
}

async function toggleBrowser() {
  if (!("Notification" in window)) return;
  if (model.prefs.browser && Notification.permission === "granted") return savePrefs({ browser: false });
  // Browsers only ask on a user gesture: this click.
  const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
  await savePrefs({ browser: answer === "granted" });
}

let audioCtx = null;
function beep() {
  try {
    audioCtx = audioCtx || new AudioContext();
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.08, audioCtx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.0001, audioCtx.currentTime + 0.25);
    osc.connect(gain).connect(audioCtx.destination);
    osc.start();
    osc.stop(audioCtx.currentTime + 0.25);
  } catch {
    /* no audio: silent */
  }
}

function announce(n) {
  if (model.prefs.sound) beep();
  if (model.prefs.browser && "Notification" in window && Notification.permission === "granted" && document.visibilityState !== "visible") {
    const { title, body } = describe(n);
    const note = new Notification(title, { body, tag: "scrm-" + n.id });
    note.onclick = () => {
      window.focus();
      open(n);
      note.close();
    };
  }
}

function onCreated(n) {
  const i = model.items.findIndex((x) => x.id === n.id);
  const wasUnread = i >= 0 && !model.items[i].read;
  if (i >= 0) model.items.splice(i, 1);
  model.items.unshift(n);
  model.items.length = Math.min(model.items.length, 50);
  if (!n.read && !wasUnread) model.unread += 1;
  renderBell();
  announce(n);
}

function wire() {
  if (wired) return;
  wired = true;
  on("live-event", (frame) => {
    if (frame.name === "notification.created" && frame.data.agent_id === state.me?.id) onCreated(frame.data.notification);
    else if (frame.name === "notification.read" && frame.data.agent_id === state.me?.id) load();
  });
  on("live-resync", load);
  on("conversation-opened", (cid) => {  // reading the conversation reads its notifications
    if (model.items.some((n) => n.conversation_id === cid && !n.read)) markRead({ conversation_id: cid });
  });
  document.addEventListener("click", (ev) => {
    if (bellEls && !bellEls.panel.hidden && !bellEls.wrap.contains(ev.target)) bellEls.panel.hidden = true;
  });
}

function bellIcon() {
  // Drawn, not an emoji: servers and kiosks often lack an emoji font.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  for (const [k, v] of Object.entries({ viewBox: "0 0 24 24", width: "16", height: "16", fill: "none", stroke: "currentColor",
    "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true" })) svg.setAttribute(k, v);
  for (const d of ["M6 8a6 6 0 0112 0c0 7 3 9 3 9H3s3-2 3-9", "M10.3 21a1.94 1.94 0 003.4 0"]) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.appendChild(path);
  }
  return svg;
}

/** The header's bell (one per header render; the list and count live on). */
export function notificationBell() {
  wire();
  const count = h("span.notif-count", { "data-testid": "notif-count", hidden: true });
  const button = h("button.bell", { "data-testid": "notif-bell", type: "button", title: t("notif.title") }, bellIcon(), count);
  const panel = h("div.notif-panel", { "data-testid": "notif-panel", hidden: true });
  const wrap = h("div.notif-wrap", {}, button, panel);
  button.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    if (!panel.hidden) renderPanel();
  });
  bellEls = { count, button, panel, wrap };
  if (!model.loaded) {
    load();
    loadPrefs();
  }
  renderBell();
  return wrap;
}

/** The full list: all, unread, or where I was @mentioned. */
export function notificationsPage() {
  const list = h("ul.notif-list.page", { "data-testid": "notif-page-list" });
  const more = h("button.link", { text: t("list.more"), hidden: true });
  let filter = "all";
  let cursor = null;
  const tabs = h("div.tabs", {}, ["all", "unread", "mention"].map((f) => h("button.tab", { "data-filter": f,
    "data-testid": "notif-filter-" + f, text: t("notif.filter_" + f), on: { click: () => { filter = f; reload(); } } })));
  async function fetchPage(before) {
    const data = await get("/notifications" + qs({ limit: 50, before_id: before, unread: filter === "unread" ? 1 : "",
      kind: filter === "mention" ? "mention" : "" }));
    cursor = data.next_before_id;
    more.hidden = !cursor;
    return data.items;
  }
  async function reload() {
    for (const b of tabs.children) b.classList.toggle("active", b.dataset.filter === filter);
    try {
      const items = await fetchPage();
      replace(list, items.length ? items.map((n) => itemEl(n)) : h("li.empty", { text: t("notif.none") }));
    } catch (err) {
      replace(list, h("li.error", { role: "alert", text: err.message }));
    }
  }
  more.addEventListener("click", async () => list.append(...(await fetchPage(cursor)).map((n) => itemEl(n))));
  const off = on("live-event", (frame) => frame.name === "notification.created" && frame.data.agent_id === state.me?.id && reload());
  reload();
  const el = h("div.desk-page", { "data-page": "notifications" },
    h("div.desk-head", {}, h("h1", { text: t("notif.title") }), h("div.spacer"),
      h("button", { text: t("notif.read_all"), on: { click: async () => { await markRead({ all: true }); reload(); } } })),
    tabs, list, more);
  return { name: "notifications", el, destroy: off };
}
