// Shared pieces of the desk pages (tickets, knowledge base, desk settings, audit, reports): frames,
// form fields, tables, errors and a busy button. Everything is text: no markup is ever parsed.
import { get } from "./api.js";
import { h, replace, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { isAdmin, state } from "./state.js";

export const SUPPORT_ROLES = ["admin", "agent"];

export function isSupport() {
  return SUPPORT_ROLES.includes(state.me?.role);
}

/** A translation, or the raw code when the dictionary has none (a new status, a new field). */
export function tr(prefix, code) {
  const key = `${prefix}.${code}`;
  const text = t(key);
  return text === key ? String(code ?? "") : text;
}

/** A page frame: title, actions on the right, then the body. */
export function deskFrame(name, title, actions, ...body) {
  return h("div.desk-page", { "data-page": name },
    h("div.desk-head", {}, h("h1", { text: title }), h("div.spacer"), actions || null), ...body);
}

export function forbidden(key = "desk.forbidden_admin") {
  return h("p.forbidden", { role: "alert", "data-testid": "forbidden", text: t(key) });
}

/** A page that needs a role: shows "forbidden" instead of calling an API that would refuse. */
export function guard(roles, build) {
  if (!roles.includes(state.me?.role)) return forbidden(roles.length === 1 ? "desk.forbidden_admin" : "desk.forbidden_support");
  return build();
}

export function field(label, control, { wide = false, hint = null, testid = null } = {}) {
  return h("label.field", { class: wide ? "wide" : null, "data-testid": testid },
    h("span", { text: label }), control, hint ? h("small.muted", { text: hint }) : null);
}

export function textInput(value, attrs = {}) {
  return h("input", { type: "text", value: value ?? "", ...attrs });
}

export function numberInput(value, attrs = {}) {
  return h("input", { type: "number", value: value ?? "", ...attrs });
}

export function textArea(value, attrs = {}) {
  const el = h("textarea", { rows: 3, ...attrs });
  el.value = value ?? "";
  return el;
}

export function checkbox(checked, attrs = {}) {
  return h("input", { type: "checkbox", checked: Boolean(checked), ...attrs });
}

export function agentOptions(empty = null, { includeMarketers = false } = {}) {
  const agents = [...state.agents.values()].filter((a) => a.active && (includeMarketers || a.role !== "marketer"));
  return [...(empty ? [["", empty]] : []), ...agents.map((a) => [a.id, a.display_name])];
}

export function agentName(id) {
  if (id == null) return "";
  return state.agents.get(id)?.display_name || `#${id}`;
}

/** A table from column titles and rows of cells (strings or nodes). */
export function table(headers, rows, attrs = {}) {
  return h("table.grid.desk-table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: x })))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td.empty-cell", { colspan: headers.length, text: t("desk.none") }))));
}

/** An error line that shows API messages (text only). */
export function errorLine(testid = "desk-error") {
  const el = h("p.error", { role: "alert", "data-testid": testid, hidden: true });
  return {
    el,
    show(err) {
      el.textContent = err?.message || String(err);
      el.hidden = false;
    },
    hide() {
      el.hidden = true;
    },
  };
}

/** Run an async action with its button disabled; errors go to `onError`. */
export async function busy(button, fn, onError) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    if (onError) onError(err);
    else throw err;
  } finally {
    if (button) button.disabled = false;
  }
}

export function when(iso) {
  return iso ? fmtTime(iso, { full: true }) : "–";
}

/** Tabs under a page head: links with data-link, one of them active. */
export function subnav(base, tabs, active, labelPrefix) {
  return h("nav.subnav", {}, tabs.map((tab) => h("a", { href: `${base}/${tab}`, "data-link": "", "data-tab": tab,
    "data-testid": "tab-" + tab, class: tab === active ? "active" : null, text: t(`${labelPrefix}.${tab}`) })));
}

export function selectOf(pairs, value, attrs = {}) {
  return select(pairs, value, attrs);
}

/** Load into `el` (loading text, then the view, or the error). */
export async function loadInto(el, build) {
  replace(el, h("p.loading", { text: t("loading") }));
  try {
    replace(el, await build());
  } catch (err) {
    replace(el, h("p.page-error", { role: "alert", "data-testid": err.status === 403 ? "forbidden" : "page-error",
      text: err.message || String(err) }));
  }
}

export { isAdmin };

// Tickets: shared by the list (tickets.js) and the detail view (ticket_detail.js).
export const PRIORITIES = ["low", "normal", "high", "urgent"];

let teamsCache = null;
export async function teams() {
  if (!teamsCache) teamsCache = (await get("/desk/teams")).teams;
  return teamsCache;
}

export function slaBadge(sla) {
  if (!sla || sla.state === "none") return null;
  return h("span.sla", { class: "sla-" + sla.state, "data-testid": "sla-state", "data-state": sla.state,
    text: tr("tickets.sla_state", sla.state) });
}
