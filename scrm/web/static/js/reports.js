// Desk reports inside the app: volume and messages per day, response and resolution times in business
// time, bot deflection and FAQ answers, SLA, CSAT, per-agent and per-team tables, CSV export.
import { get, qs } from "./api.js";
import { h, replace, select } from "./dom.js";
import { t } from "./i18n.js";
import { barChart, legend, lineChart } from "./charts.js";
import { deskFrame, forbidden, SUPPORT_ROLES } from "./desk_common.js";
import { state } from "./state.js";

const GROUPS = ["none", "inbox", "channel", "team", "agent"];
const COLUMNS = ["label", "opened", "resolved", "messages_in", "messages_out", "first_response_median", "first_response_p90",
  "resolution_median", "resolution_p90", "deflection_rate", "handoffs", "faq_questions", "faq_answer_rate", "sla_compliance",
  "csat_average", "csat_answers"];
const SECONDS = new Set(["first_response_median", "first_response_p90", "resolution_median", "resolution_p90"]);
const RATES = new Set(["deflection_rate", "sla_compliance", "faq_answer_rate"]);
const PEOPLE_COLUMNS = ["label", "opened", "resolved", "messages_out", "first_response_median", "resolution_median", "sla_compliance",
  "csat_average", "csat_answers"];

function fmt(key, v) {
  if (v === null || v === undefined || v === "") return "–";
  if (SECONDS.has(key)) return t("reports.min", { n: (v / 60).toFixed(1) });
  if (RATES.has(key)) return `${(v * 100).toFixed(1)}%`;
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(2);
  return String(v);
}

const total = (rows, key) => rows.reduce((sum, r) => sum + (r[key] || 0), 0);
const pct = (a, b) => (b ? `${((a / b) * 100).toFixed(1)}%` : "–");

function card(label, value, hint, testid) {
  return h("div.card.stat", { "data-testid": testid }, h("b", { text: String(value) }), h("span", { text: label }), hint ? h("small", { text: hint }) : null);
}

function dataTable(columns, rows, testid, labelKey = "reports.col.") {
  return h("div.table-wrap", {}, h("table.grid.desk-table", { "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { text: t(labelKey + c) })))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { text: c === "label" ? String(r[c] ?? "") : fmt(c, r[c]) })))) : h("tr", {}, h("td.empty-cell", { colspan: columns.length, text: t("desk.none") })))));
}

function shiftDay(day, n) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function reportsPage() {
  if (!SUPPORT_ROLES.includes(state.me?.role)) return { name: "reports", el: forbidden("desk.forbidden_support") };
  const params = new URLSearchParams(location.search);
  const from = h("input", { type: "date", value: params.get("from") || "", "data-testid": "rp-from" });
  const to = h("input", { type: "date", value: params.get("to") || "", "data-testid": "rp-to" });
  const group = select(GROUPS.map((g) => [g, t("reports.group." + g)]), params.get("group_by") || "none", { "data-testid": "rp-group" });
  const csvReport = h("a.button", { "data-testid": "rp-csv", text: t("reports.csv"), download: "" });
  const csvDaily = h("a.button", { "data-testid": "rp-csv-daily", text: t("reports.csv_daily"), download: "" });
  const status = h("p.muted", { role: "status", "data-testid": "rp-status" });
  const out = h("div.report-body", { "data-testid": "report" });
  const form = h("form.filters.desk-filters", { on: { submit: (ev) => { ev.preventDefault(); load(); } } },
    h("label.field", {}, h("span", { text: t("reports.from") }), from), h("label.field", {}, h("span", { text: t("reports.to") }), to),
    h("label.field", {}, h("span", { text: t("reports.group_by") }), group),
    h("button.primary", { type: "submit", "data-testid": "rp-refresh", text: t("reports.refresh") }), csvReport, csvDaily);

  async function load() {
    const query = { group_by: group.value, from: from.value, to: to.value };
    csvReport.href = "/api/v1/desk/reports.csv" + qs(query);
    csvDaily.href = "/api/v1/desk/reports/timeseries.csv" + qs(query);
    status.textContent = t("loading");
    delete out.dataset.ready;
    try {
      const [report, agents, teams] = await Promise.all([get("/desk/reports" + qs(query)),
        get("/desk/reports" + qs({ ...query, group_by: "agent" })), get("/desk/reports" + qs({ ...query, group_by: "team" }))]);
      render(report, agents.rows, teams.rows);
      from.value = report.from.slice(0, 10);
      to.value = shiftDay(report.to.slice(0, 10), -1); // the API's end is local midnight, exclusive
      status.textContent = t("reports.range", { from: from.value, to: to.value, tz: report.timezone });
      out.dataset.ready = "1";
    } catch (err) {
      status.textContent = err.message;
    }
  }

  function render(report, agentRows, teamRows) {
    const rows = report.rows;
    const resolved = total(rows, "resolved_total");
    const faqAsked = total(rows, "faq_questions");
    const answers = total(rows, "csat_answers");
    const csatSum = rows.reduce((s, r) => s + (r.csat_average || 0) * (r.csat_answers || 0), 0);
    const cards = h("section.cards", { "data-testid": "rp-cards" },
      card(t("reports.opened"), total(rows, "opened"), null, "rp-opened"), card(t("reports.resolved"), total(rows, "resolved")),
      card(t("reports.messages_in"), total(rows, "messages_in")), card(t("reports.messages_out"), total(rows, "messages_out")),
      card(t("reports.deflection"), pct(total(rows, "resolved_by_bot"), resolved), t("reports.deflection_hint"), "rp-deflection"),
      card(t("reports.handoffs"), total(rows, "handoffs")),
      card(t("reports.faq_rate"), pct(Math.min(total(rows, "faq_answered"), faqAsked), faqAsked),
        faqAsked ? `${total(rows, "faq_answered")} / ${faqAsked}` : "", "rp-faq-rate"),
      card(t("reports.sla"), pct(total(rows, "sla_met"), total(rows, "sla_total"))),
      card(t("reports.csat"), answers ? (csatSum / answers).toFixed(2) : "–"));
    const days = report.timeseries;
    const lines = ["opened", "resolved", "messages_in", "messages_out"].map((k) => ({ name: t("reports." + k), values: days.map((d) => d[k]) }));
    const bars = [["first_response_median", "reports.col.first_response_median"], ["first_response_p90", "reports.col.first_response_p90"],
      ["resolution_median", "reports.col.resolution_median"]].map(([k, label]) => ({ name: t(label),
      values: rows.map((r) => +((r[k] || 0) / 60).toFixed(1)) }));
    const dist = [{ name: t("reports.col.csat_answers"), values: [1, 2, 3, 4, 5].map((n) => total(rows, `csat_${n}`)) }];
    replace(out, cards,
      h("section.card.chart", {}, h("h2", { text: t("reports.daily") }), lineChart(days.map((d) => d.day), lines), legend(lines)),
      h("section.card.chart", {}, h("h2", { text: t("reports.times") }), barChart(rows.map((r) => r.label), bars), legend(bars)),
      h("section.card.chart", {}, h("h2", { text: t("reports.csat_dist") }), barChart(["1", "2", "3", "4", "5"], dist, { height: 200 }), legend(dist)),
      h("section", {}, h("h2", { text: t("reports.details") }), dataTable(COLUMNS, rows, "rp-details")),
      h("div.two-col", {},
        h("section", {}, h("h2", { text: t("reports.per_agent") }), dataTable(PEOPLE_COLUMNS, agentRows, "rp-agents")),
        h("section", {}, h("h2", { text: t("reports.per_team") }), dataTable(PEOPLE_COLUMNS, teamRows, "rp-teams"))),
      h("div.two-col", {},
        h("section", {}, h("h2", { text: t("reports.faq_top") }),
          dataTable(["count", "question", "confidence"], report.faq_top || [], "rp-faq-top", "reports.faq.")),
        h("section", {}, h("h2", { text: t("reports.unanswered_top") }), h("p.muted", {}, h("a", { href: "/kb/unanswered", "data-link": "", text: t("reports.to_kb") })),
          dataTable(["count", "example"], report.unanswered_top || [], "rp-unanswered", "reports.faq."))),
      h("section", {}, h("h2", { text: t("reports.broadcasts") }),
        dataTable(["name", "targeted", "skipped", "sent", "delivered", "failed", "replied", "opted_out"], report.broadcasts || [], "rp-broadcasts", "reports.bc.")));
  }
  load();
  return { name: "reports", el: deskFrame("reports", t("nav.reports"), null, form, status, out) };
}
