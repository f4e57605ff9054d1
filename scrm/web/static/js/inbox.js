// The inbox: conversation list (tabs, filters, search, live updates) + the open thread + the contact panel.
import { get, qs } from "./api.js";
import { debounce, h, replace, select } from "./dom.js";
import { fmtAgo, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { navigate, refreshCounts } from "./router.js";
import { on, state } from "./state.js";
import { ThreadView } from "./thread.js";
import { ContactPanel } from "./contact.js";
import { toast } from "./toast.js";
import { BulkSelection } from "./bulk.js";
import { startConversationButton } from "./start_conversation.js";

const FILTER_KEY = "scrm.filters";
const DEFAULTS = { tab: "all", status: "open", handler: "", inbox_id: "", label: "", q: "" };

function loadFilters() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(FILTER_KEY) || "{}"), q: "" };
  } catch {
    return { ...DEFAULTS };
  }
}

function sortKey(c) {
  return [c.last_activity_at || "", c.id];
}

function newer(a, b) {
  const [at, ai] = sortKey(a);
  const [bt, bi] = sortKey(b);
  if (at !== bt) return new Date(at) > new Date(bt) ? -1 : 1;
  return bi - ai;
}

export function inboxPage(path) {
  const filters = loadFilters();
  let items = [];
  let nextCursor = null;
  let selectedId = null;
  let loadSeq = 0;
  let inboxes = [];

  const listEl = h("ul.conv-list", { "data-testid": "conv-list" });
  const moreBtn = h("button.link.more", { text: t("list.more"), hidden: true, on: { click: loadMore } });
  const tabCounts = {};
  const tabs = h("div.tabs", { role: "tablist" }, ["mine", "unassigned", "all"].map((tab) => {
    tabCounts[tab] = h("span.count");
    return h("button.tab", { role: "tab", "data-tab": tab, "data-testid": "tab-" + tab, on: { click: () => setFilter("tab", tab) } },
      t("tab." + tab), " ", tabCounts[tab]);
  }));
  const status = select([["open", t("status.open")], ["pending", t("status.pending")], ["snoozed", t("status.snoozed")],
    ["resolved", t("status.resolved")], ["all", t("filter.all_status")]], filters.status, { "data-testid": "filter-status", "aria-label": t("filter.status") });
  status.addEventListener("change", () => setFilter("status", status.value));
  const handler = select([["", t("filter.any_handler")], ["bot", t("handler.bot")], ["queue", t("handler.queue")], ["human", t("handler.human")]],
    filters.handler, { "data-testid": "filter-handler", "aria-label": t("filter.handler") });
  handler.addEventListener("change", () => setFilter("handler", handler.value));
  const inboxSel = select([["", t("filter.any_inbox")]], "", { "data-testid": "filter-inbox", "aria-label": t("filter.inbox") });
  inboxSel.addEventListener("change", () => setFilter("inbox_id", inboxSel.value));
  const label = h("input.label-filter", { placeholder: t("filter.label"), value: filters.label, "data-testid": "filter-label" });
  label.addEventListener("change", () => setFilter("label", label.value.trim()));
  const search = h("input.search", { type: "search", placeholder: t("list.search"), "data-testid": "search" });
  search.addEventListener("input", debounce(() => setFilter("q", search.value.trim()), 300));
  const listError = h("p.error", { role: "alert", hidden: true });
  const bulk = new BulkSelection(() => reload());

  const contact = new ContactPanel((cid) => navigate("/conversations/" + cid));
  const thread = new ThreadView({
    onContact: (id) => contact.load(id),
    onConversation: (conv) => upsert(conv, true),
  });
  const el = h("div.inbox", {},
    h("section.list-pane", {}, tabs, h("div.filters", {}, search, status, handler, inboxSel, label, startConversationButton()),
      bulk.bar, listError, listEl, moreBtn),
    thread.el, contact.el);

  function setFilter(name, value) {
    if (filters[name] === value) return;
    filters[name] = value;
    const { q, ...keep } = filters;
    localStorage.setItem(FILTER_KEY, JSON.stringify(keep));
    renderTabs();
    reload();
  }

  function renderTabs() {
    for (const b of tabs.children) b.classList.toggle("active", b.dataset.tab === filters.tab);
  }

  function params(cursor) {
    return qs({ tab: filters.tab, status: filters.status, handler: filters.handler, inbox_id: filters.inbox_id,
      label: filters.label, q: filters.q, cursor, limit: 50 });
  }

  async function reload() {
    const seq = ++loadSeq;
    try {
      const data = await get("/conversations" + params());
      if (seq !== loadSeq) return; // a newer filter won
      items = data.items;
      nextCursor = data.next_cursor;
      listError.hidden = true;
      render();
    } catch (err) {
      if (seq !== loadSeq) return;
      listError.textContent = err.message;
      listError.hidden = false;
    }
  }
  const reloadSoon = debounce(reload, 300);

  async function loadMore() {
    if (!nextCursor) return;
    try {
      const data = await get("/conversations" + params(nextCursor));
      const known = new Set(items.map((c) => c.id));
      items.push(...data.items.filter((c) => !known.has(c.id)));
      nextCursor = data.next_cursor;
      render();
    } catch (err) {
      toast(err.message);
    }
  }

  function matches(c) {
    if (filters.tab === "mine" && c.assignee_id !== state.me.id) return false;
    if (filters.tab === "unassigned" && c.assignee_id != null) return false;
    if (filters.status !== "all" && c.status !== filters.status) return false;
    if (filters.handler && c.handler !== filters.handler) return false;
    if (filters.inbox_id && String(c.inbox_id) !== filters.inbox_id) return false;
    if (filters.label && !(c.labels || []).includes(filters.label)) return false;
    return true;
  }

  /** Put a changed conversation where it belongs (or take it out when it no longer matches). */
  function upsert(conv, fromThread = false) {
    if (!conv) return;
    if (filters.q) {
      reloadSoon(); // the server decides what matches a text search
      return;
    }
    const i = items.findIndex((c) => c.id === conv.id);
    if (i >= 0) items.splice(i, 1);
    if (matches(conv)) {
      const last = items[items.length - 1];
      if (i >= 0 || !nextCursor || !last || newer(conv, last) < 0) items.push(fromThread && i >= 0 ? { ...conv } : conv);
    }
    items.sort(newer);
    render();
  }

  function row(c) {
    const name = c.contact?.name || c.contact?.email || c.contact?.phone || t("contact.anonymous");
    const li = h("li.conv-row", { "data-testid": "conv-row", "data-id": c.id, tabindex: 0,
      class: [c.id === selectedId ? "selected" : "", c.unread_count ? "unread" : ""].join(" "),
      on: { click: () => navigate("/conversations/" + c.id), keydown: (e) => e.key === "Enter" && navigate("/conversations/" + c.id) } },
      h("div.row-top", {},
        bulk.checkbox(c.id),
        channelIcon(c.channel_type),
        h("span.name", { text: name }),
        c.priority && c.priority !== "normal" ? h("span.prio", { class: c.priority, text: t("priority." + c.priority) }) : null,
        h("span.when", { text: c.waiting_since ? fmtAgo(c.waiting_since) : fmtAgo(c.last_activity_at),
          title: c.waiting_since ? t("list.waiting_since") : t("list.last_activity"), class: c.waiting_since ? "waiting" : "" })),
      h("div.row-bottom", {},
        h("span.preview", { "data-testid": "conv-preview", text: c.last_message_preview || "" }),
        c.unread_count ? h("span.unread-count", { "data-testid": "unread", text: c.unread_count }) : null),
      h("div.row-meta", {},
        h("span.chip", { class: "handler-" + c.handler, text: t("handler." + c.handler) }),
        c.status !== "open" ? h("span.chip", { text: t("status." + c.status) }) : null,
        h("span.assignee", { text: c.assignee ? c.assignee.display_name : t("list.unassigned") }),
        (c.labels || []).map((l) => h("span.label", { text: l }))));
    return li;
  }

  function render() {
    replace(listEl, items.length ? items.map(row) : h("li.empty", { text: t("list.empty") }));
    bulk.shown(items.map((c) => c.id));
    moreBtn.hidden = !nextCursor;
  }

  async function loadInboxes() {
    try {
      inboxes = (await get("/inboxes")).items;
      replace(inboxSel, h("option", { value: "", text: t("filter.any_inbox") }),
        inboxes.map((i) => h("option", { value: i.id, text: `${i.name} (${i.channel_type})`, selected: String(i.id) === filters.inbox_id })));
    } catch {
      /* the filter just stays "any inbox" */
    }
  }

  function openFromPath(p) {
    const m = /^\/conversations\/(\d+)$/.exec(p);
    selectedId = m ? Number(m[1]) : null;
    for (const li of listEl.querySelectorAll(".conv-row")) li.classList.toggle("selected", Number(li.dataset.id) === selectedId);
    if (selectedId) thread.open(selectedId);
    else {
      thread.close();
      contact.clear();
    }
  }

  const offs = [
    on("live-event", (frame) => {
      const d = frame.data || {};
      if (d.conversation) upsert(d.conversation);
      thread.onEvent(frame);
      if (frame.name === "contact.updated") contact.onContactUpdated(d.contact_id);
    }),
    on("live-resync", () => {
      reload();
      thread.resync();
    }),
    on("counts", (c) => {
      for (const tab of ["mine", "unassigned", "all"]) tabCounts[tab].textContent = c[tab] ?? "";
    }),
  ];
  const ticker = setInterval(render, 30000); // waiting times move on

  renderTabs();
  reload();
  loadInboxes();
  refreshCounts();
  openFromPath(path);
  return {
    name: "inbox",
    el,
    route: openFromPath,
    destroy() {
      offs.forEach((off) => off());
      clearInterval(ticker);
      thread.destroy();
    },
  };
}
