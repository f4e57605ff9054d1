// Tickets: the filtered list (filters saved per agent), a ticket's page, and the new-ticket form.
import { api, get, qs } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import { fmtAgo, t } from "./i18n.js";
import { navigate } from "./router.js";
import { on, state } from "./state.js";
import { toast } from "./toast.js";
import { agentOptions, deskFrame, forbidden, PRIORITIES, selectOf, slaBadge, SUPPORT_ROLES, teams, tr } from "./desk_common.js";

export const STATUSES = ["new", "open", "pending", "solved", "closed"];
const DEFAULT_FILTERS = { status: "active", priority: "", assignee: "", team_id: "", sla: "", q: "" };

export function ticketsPage(path) {
  const el = h("div.desk-wrap");
  let current = null;
  function show(p) {
    current?.destroy?.();
    current = null;
    if (!SUPPORT_ROLES.includes(state.me?.role)) return replace(el, forbidden("desk.forbidden_support"));
    if (p === "/tickets/new") current = newTicketView();
    else if (/^\/tickets\/\d+$/.test(p)) current = null;
    else current = listView();
    if (current) return replace(el, current.el);
    import("./ticket_detail.js").then((m) => {
      current = m.ticketDetail(Number(p.split("/")[2]));
      replace(el, current.el);
    });
  }
  show(path);
  return { name: "tickets", el, route: show, destroy: () => current?.destroy?.() };
}

function listView() {
  const filters = { ...DEFAULT_FILTERS };
  let cursor = null;
  let seq = 0;
  const body = h("tbody", { "data-testid": "ticket-rows" });
  const more = h("button.link", { text: t("list.more"), hidden: true, on: { click: () => load(true) } });
  const error = h("p.error", { role: "alert", hidden: true });
  const controls = {
    status: selectOf([["", t("tickets.any_status")], ["active", t("tickets.status_group.active")],
      ["done", t("tickets.status_group.done")], ...STATUSES.map((s) => [s, tr("tickets.status", s)])], filters.status,
    { "data-testid": "tf-status", "aria-label": t("tickets.status_label") }),
    priority: selectOf([["", t("tickets.any_priority")], ...PRIORITIES.map((p) => [p, t("priority." + p)])], "",
      { "data-testid": "tf-priority", "aria-label": t("thread.priority") }),
    assignee: selectOf([["", t("tickets.any_assignee")], ["me", t("tickets.assignee_me")], ["none", t("list.unassigned")],
      ...agentOptions()], "", { "data-testid": "tf-assignee", "aria-label": t("tickets.assignee") }),
    team_id: selectOf([["", t("tickets.any_team")]], "", { "data-testid": "tf-team", "aria-label": t("tickets.team") }),
    sla: selectOf([["", t("tickets.any_sla")], ["due_soon", t("tickets.sla_due_soon")], ["breached", t("tickets.sla_breached")]], "",
      { "data-testid": "tf-sla", "aria-label": "SLA" }),
    q: h("input.search", { type: "search", placeholder: t("tickets.search"), "data-testid": "tf-q" }),
  };
  for (const [name, control] of Object.entries(controls)) {
    control.addEventListener(name === "q" ? "input" : "change", name === "q" ? debounce(() => set(name, control.value.trim()), 300)
      : () => set(name, control.value));
  }
  const saveSoon = debounce(async () => {
    const { q, ...keep } = filters;
    const clean = Object.fromEntries(Object.entries({ ...keep, q }).filter(([, v]) => v !== ""));
    if (clean.team_id) clean.team_id = Number(clean.team_id);
    try {
      await api("PUT", "/me/preferences", { ticket_filters: clean });
    } catch {
      /* the filters still apply now; they are just not remembered */
    }
  }, 500);

  function set(name, value) {
    if (filters[name] === value) return;
    filters[name] = value;
    saveSoon();
    load(false);
  }

  function row(tk) {
    return h("tr.ticket-row", { "data-testid": "ticket-row", "data-id": tk.id, tabindex: 0,
      on: { click: () => navigate("/tickets/" + tk.id), keydown: (e) => e.key === "Enter" && navigate("/tickets/" + tk.id) } },
      h("td", {}, h("a", { href: "/tickets/" + tk.id, "data-link": "", text: tk.display_number })),
      h("td.subject", { text: tk.subject }),
      h("td", {}, h("span.chip", { class: "st-" + tk.status, "data-testid": "ticket-status", text: tr("tickets.status", tk.status) })),
      h("td", {}, h("span.prio", { class: tk.priority, text: t("priority." + tk.priority) })),
      h("td", { text: tk.contact_name || t("contact.anonymous") }),
      h("td", { text: tk.assignee_name || t("list.unassigned") }),
      h("td", { text: tk.team_name || "–" }),
      h("td", {}, slaBadge(tk.sla)),
      h("td.muted", { text: fmtAgo(tk.updated_at), title: tk.updated_at }));
  }

  async function load(append) {
    const mySeq = ++seq;
    try {
      const data = await get("/tickets" + qs({ ...filters, before_id: append ? cursor : "", limit: 50 }));
      if (mySeq !== seq) return;
      cursor = data.next_before_id;
      more.hidden = !cursor;
      error.hidden = true;
      const rows = data.items.map(row);
      if (append) body.append(...rows);
      else replace(body, rows.length ? rows : h("tr", {}, h("td.empty-cell", { colspan: 9, "data-testid": "tickets-empty", text: t("tickets.empty") })));
    } catch (err) {
      if (mySeq !== seq) return;
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  async function init() {
    try {
      const [prefs, teamList] = await Promise.all([get("/me/preferences"), teams()]);
      replace(controls.team_id, h("option", { value: "", text: t("tickets.any_team") }),
        teamList.map((tm) => h("option", { value: tm.id, text: tm.name })));
      Object.assign(filters, Object.fromEntries(Object.entries(prefs.ticket_filters || {}).filter(([, v]) => v !== null)
        .map(([k, v]) => [k, String(v)])));
      for (const [name, control] of Object.entries(controls)) control.value = filters[name] ?? "";
    } catch {
      /* defaults */
    }
    load(false);
  }
  const off = on("live-event", (frame) => frame.name === "ticket.opened" && load(false));
  init();
  const el = deskFrame("tickets", t("nav.tickets"),
    h("a.button.primary", { href: "/tickets/new", "data-link": "", "data-testid": "new-ticket", text: t("tickets.new") }),
    h("div.filters.desk-filters", {}, controls.q, controls.status, controls.priority, controls.assignee, controls.team_id, controls.sla),
    error,
    h("table.grid.desk-table.ticket-table", {}, h("thead", {}, h("tr", {}, ["#", t("tickets.subject"), t("tickets.status_label"),
      t("thread.priority"), t("tickets.customer"), t("tickets.assignee"), t("tickets.team"), "SLA", t("tickets.updated")]
      .map((x) => h("th", { text: x })))), body),
    more);
  return { el, destroy: off };
}

function newTicketView() {
  const params = new URLSearchParams(location.search);
  const conversationId = Number(params.get("conversation_id")) || null;
  const error = h("p.error", { role: "alert", "data-testid": "ticket-error", hidden: true });
  const subject = h("input", { name: "subject", required: true, maxlength: 255, "data-testid": "nt-subject" });
  const description = h("textarea", { rows: 5, "data-testid": "nt-description" });
  const priority = selectOf(PRIORITIES.map((p) => [p, t("priority." + p)]), "normal", { "data-testid": "nt-priority" });
  const assignee = selectOf(agentOptions(t("list.unassigned")), state.me.id, { "data-testid": "nt-assignee" });
  const team = selectOf([["", "–"]], "", { "data-testid": "nt-team" });
  const contactBox = h("div.contact-pick");
  let contactId = null;
  teams().then((list) => replace(team, h("option", { value: "", text: "–" }), list.map((x) => h("option", { value: x.id, text: x.name }))))
    .catch(() => {});

  if (conversationId) {
    get(`/conversations/${conversationId}?limit=20`).then((conv) => {
      contactId = conv.contact_id;
      subject.value = conv.subject || conv.last_message_preview || "";
      const lastIn = [...conv.messages].reverse().find((m) => m.direction === "in" && m.text);
      description.value = lastIn ? lastIn.text : "";
      priority.value = conv.priority;
      replace(contactBox, h("p", { "data-testid": "nt-conversation" }, t("tickets.from_conversation"), " ",
        h("a", { href: "/conversations/" + conversationId, "data-link": "", text: "#" + conversationId }), " · ",
        h("strong", { text: conv.contact?.name || t("contact.anonymous") })));
    }).catch((err) => { error.textContent = err.message; error.hidden = false; });
  } else {
    const search = h("input", { type: "search", placeholder: t("tickets.find_contact"), "data-testid": "nt-contact-search" });
    const results = h("ul.pick-list", { "data-testid": "nt-contact-results" });
    const chosen = h("p.muted", { "data-testid": "nt-contact", text: t("tickets.no_contact") });
    search.addEventListener("input", debounce(async () => {
      const q = search.value.trim();
      if (!q) return replace(results);
      try {
        const data = await get("/contacts" + qs({ q, limit: 8 }));
        replace(results, data.items.map((c) => h("li", { tabindex: 0, "data-testid": "nt-contact-option", on: { click: () => {
          contactId = c.id;
          chosen.textContent = t("tickets.contact_chosen", { name: c.name || c.email || c.phone || "#" + c.id });
          replace(results);
        } } }, h("strong", { text: c.name || t("contact.anonymous") }), " ", h("span.muted", { text: [c.email, c.phone].filter(Boolean).join(" · ") }))));
      } catch (err) {
        toast(err.message);
      }
    }, 250));
    replace(contactBox, h("label.field.wide", {}, h("span", { text: t("tickets.customer") }), search), results, chosen);
  }

  const submit = h("button.primary", { type: "submit", "data-testid": "nt-submit", text: t("tickets.create") });
  const form = h("form.desk-form", { on: { submit: async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const extra = { assignee_id: assignee.value ? Number(assignee.value) : null, team_id: team.value ? Number(team.value) : null };
      let ticket;
      if (conversationId) {
        ticket = await api("POST", `/conversations/${conversationId}/tickets`, { subject: subject.value.trim(),
          description: description.value || null, priority: priority.value });
        ticket = await api("PATCH", `/tickets/${ticket.id}`, extra);
      } else {
        if (!contactId) throw new Error(t("tickets.pick_contact"));
        ticket = await api("POST", "/tickets", { subject: subject.value.trim(), contact_id: contactId,
          description: description.value || null, priority: priority.value, ...extra });
      }
      toast(t("tickets.created", { number: ticket.display_number }), "ok", 3000);
      navigate("/tickets/" + ticket.id);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  } } },
  contactBox,
  h("label.field.wide", {}, h("span", { text: t("tickets.subject") }), subject),
  h("label.field.wide", {}, h("span", { text: t("tickets.description") }), description),
  h("div.form-row", {}, h("label.field", {}, h("span", { text: t("thread.priority") }), priority),
    h("label.field", {}, h("span", { text: t("tickets.assignee") }), assignee),
    h("label.field", {}, h("span", { text: t("tickets.team") }), team)),
  error, h("div.form-actions", {}, submit, h("a.button", { href: "/tickets", "data-link": "", text: t("desk.cancel") })));
  return { el: deskFrame("ticket-new", t("tickets.new"), null, form) };
}
