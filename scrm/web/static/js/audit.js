// The audit log (admins): who did what, when, to which object; filters and a CSV export of the same.
import { get, qs } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { state } from "./state.js";
import { agentOptions, deskFrame, forbidden, selectOf, tr, when } from "./desk_common.js";

const TARGET_LINKS = { conversation: (id) => "/conversations/" + id, ticket: (id) => "/tickets/" + id };

export function auditPage() {
  if (state.me?.role !== "admin") return { name: "audit", el: forbidden("desk.forbidden_admin") };
  const filters = { agent_id: "", action: "", target_type: "", target_id: "", from: "", to: "" };
  let cursor = null;
  const body = h("tbody", { "data-testid": "audit-rows" });
  const more = h("button.link", { text: t("list.more"), hidden: true, on: { click: () => load(true) } });
  const csv = h("a.button", { "data-testid": "audit-csv", text: t("audit.csv"), download: "audit-log.csv" });
  const agent = selectOf([["", t("audit.any_agent")], ...agentOptions(null, { includeMarketers: true })], "", { "data-testid": "audit-agent" });
  const action = selectOf([["", t("audit.any_action")]], "", { "data-testid": "audit-action" });
  const targetType = selectOf([["", t("audit.any_target")], ...["conversation", "ticket", "faq_entry", "contact", "message", "inbox", "agent"]
    .map((x) => [x, tr("audit.target", x)])], "", { "data-testid": "audit-target-type" });
  const targetId = h("input", { type: "number", min: 0, placeholder: t("audit.target_id"), "data-testid": "audit-target-id" });
  const from = h("input", { type: "date", "data-testid": "audit-from", "aria-label": t("reports.from") });
  const to = h("input", { type: "date", "data-testid": "audit-to", "aria-label": t("reports.to") });
  const controls = { agent_id: agent, action, target_type: targetType, target_id: targetId, from, to };
  for (const [k, c] of Object.entries(controls)) c.addEventListener(k === "target_id" ? "input" : "change", debounce(() => {
    filters[k] = c.value;
    load(false);
  }, k === "target_id" ? 300 : 0));

  function row(a) {
    const link = TARGET_LINKS[a.target_type] && a.target_id ? TARGET_LINKS[a.target_type](a.target_id) : null;
    const target = `${tr("audit.target", a.target_type)}${a.target_id != null ? " #" + a.target_id : ""}`;
    return h("tr", { "data-testid": "audit-row" }, h("td", { text: when(a.created_at) }), h("td", { text: a.agent || t("sender.system") }),
      h("td", {}, h("code", { text: a.action })),
      h("td", {}, link ? h("a", { href: link, "data-link": "", text: target }) : target),
      h("td.audit-data", { text: Object.entries(a.data || {}).filter(([, v]) => v !== null)
        .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ") }));
  }

  async function load(append) {
    const query = { ...filters };
    csv.href = "/api/v1/audit.csv" + qs(query);
    try {
      const data = await get("/audit" + qs({ ...query, before_id: append ? cursor : "", limit: 100 }));
      cursor = data.next_before_id;
      more.hidden = !cursor;
      if (!append && action.options.length <= 1) {
        for (const name of data.actions) action.append(h("option", { value: name, text: name }));
      }
      const rows = data.items.map(row);
      if (append) body.append(...rows);
      else replace(body, rows.length ? rows : h("tr", {}, h("td.empty-cell", { colspan: 5, text: t("audit.empty") })));
    } catch (err) {
      replace(body, h("tr", {}, h("td.error", { colspan: 5, role: "alert", text: err.message })));
    }
  }
  load(false);
  const el = deskFrame("audit", t("nav.audit"), csv,
    h("div.filters.desk-filters", {}, agent, action, targetType, targetId, from, to),
    h("table.grid.desk-table", {}, h("thead", {}, h("tr", {}, [t("audit.when"), t("audit.who"), t("audit.what"), t("audit.target_label"),
      t("audit.details")].map((x) => h("th", { text: x })))), body), more);
  return { name: "audit", el };
}
