// Desk reports page: reads /api/v1/desk/reports with the session cookie and draws plain SVG charts.
import { barChart, legend, lineChart } from "/static/reports/charts.js";

const $ = (sel) => document.querySelector(sel);
const COLUMNS = [
  ["label", "分组 Group"], ["opened", "新会话 Opened"], ["resolved", "已解决 Resolved"],
  ["messages_in", "收到 In"], ["messages_out", "发出 Out"],
  ["first_response_median", "首响中位 FRT p50"], ["first_response_p90", "首响 p90"],
  ["resolution_median", "解决中位 Res p50"], ["resolution_p90", "解决 p90"],
  ["deflection_rate", "机器人解决率 Deflection"], ["handoffs", "转人工 Handoffs"],
  ["faq_questions", "问机器人 Bot questions"], ["faq_answer_rate", "FAQ 回答率 FAQ answered"],
  ["sla_compliance", "SLA 达标 SLA"], ["csat_average", "满意度 CSAT"], ["csat_answers", "评价数 Ratings"],
];
const SECONDS = new Set(["first_response_median", "first_response_p90", "resolution_median", "resolution_p90"]);
const RATES = new Set(["deflection_rate", "sla_compliance", "faq_answer_rate"]);

function fmt(key, v) {
  if (v === null || v === undefined || v === "") return "–";
  if (SECONDS.has(key)) return `${(v / 60).toFixed(1)} min`;
  if (RATES.has(key)) return `${(v * 100).toFixed(1)}%`;
  return String(v);
}

function query() {
  // Empty dates let the server pick the last 30 days in the report's time zone (not the browser's).
  const f = new FormData($("#filters"));
  const q = new URLSearchParams({ group_by: f.get("group_by") });
  if (f.get("from")) q.set("from", f.get("from"));
  if (f.get("to")) q.set("to", f.get("to"));
  return q.toString();
}

function shiftDay(day, n) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function card(label, value, hint = "") {
  const div = document.createElement("div");
  div.className = "card";
  const b = document.createElement("b");
  b.textContent = value;
  const span = document.createElement("span");
  span.textContent = label;
  div.append(b, span);
  if (hint) { const small = document.createElement("small"); small.textContent = hint; div.append(small); }
  return div;
}

function total(rows, key) { return rows.reduce((sum, r) => sum + (r[key] || 0), 0); }

function render(report) {
  const rows = report.rows;
  const resolved = total(rows, "resolved_total"), byBot = total(rows, "resolved_by_bot");
  const slaTotal = total(rows, "sla_total"), slaMet = total(rows, "sla_met");
  const answers = total(rows, "csat_answers");
  const faqAsked = total(rows, "faq_questions"), faqAnswered = total(rows, "faq_answered");
  const csatSum = rows.reduce((s, r) => s + (r.csat_average || 0) * (r.csat_answers || 0), 0);
  $("#cards").replaceChildren(
    card("新会话 Opened", total(rows, "opened")), card("已解决 Resolved", total(rows, "resolved")),
    card("收到消息 Messages in", total(rows, "messages_in")), card("发出消息 Messages out", total(rows, "messages_out")),
    card("机器人解决率 Deflection", resolved ? `${((byBot / resolved) * 100).toFixed(1)}%` : "–"),
    card("转人工 Handoffs", total(rows, "handoffs")),
    card("FAQ 回答率 FAQ answer rate", faqAsked ? `${((Math.min(faqAnswered, faqAsked) / faqAsked) * 100).toFixed(1)}%` : "–",
      faqAsked ? `${faqAnswered} / ${faqAsked}` : ""),
    card("SLA 达标率 Compliance", slaTotal ? `${((slaMet / slaTotal) * 100).toFixed(1)}%` : "–"),
    card("平均满意度 CSAT", answers ? (csatSum / answers).toFixed(2) : "–"),
  );
  const days = report.timeseries;
  const lineSeries = [
    { name: "新会话 Opened", values: days.map((d) => d.opened) },
    { name: "已解决 Resolved", values: days.map((d) => d.resolved) },
    { name: "收到消息 In", values: days.map((d) => d.messages_in) },
    { name: "发出消息 Out", values: days.map((d) => d.messages_out) },
  ];
  $("#line").replaceChildren(lineChart(days.map((d) => d.day), lineSeries), legend(lineSeries));
  const cats = rows.map((r) => r.label);
  const barSeries = [
    { name: "首响中位 FRT median", values: rows.map((r) => +((r.first_response_median || 0) / 60).toFixed(1)) },
    { name: "首响 p90", values: rows.map((r) => +((r.first_response_p90 || 0) / 60).toFixed(1)) },
    { name: "解决中位 Resolution median", values: rows.map((r) => +((r.resolution_median || 0) / 60).toFixed(1)) },
  ];
  $("#bars").replaceChildren(barChart(cats, barSeries), legend(barSeries));
  const dist = [{ name: "评价数 Ratings", values: [1, 2, 3, 4, 5].map((n) => total(rows, `csat_${n}`)) }];
  $("#csat").replaceChildren(barChart(["1", "2", "3", "4", "5"], dist, { height: 200 }), legend(dist));

  const table = $("#table");
  const head = document.createElement("tr");
  for (const [, title] of COLUMNS) { const th = document.createElement("th"); th.textContent = title; head.append(th); }
  const body = rows.map((r) => {
    const tr = document.createElement("tr");
    for (const [key] of COLUMNS) { const td = document.createElement("td"); td.textContent = key === "label" ? r.label : fmt(key, r[key]); tr.append(td); }
    return tr;
  });
  table.replaceChildren(head, ...body);
  simpleTable($("#faq-top"), [["count", "次数 Answers"], ["question", "FAQ 问题 Entry"], ["confidence", "平均置信度 Avg confidence"]],
    report.faq_top || []);
  simpleTable($("#unanswered"), [["count", "次数 Count"], ["example", "未答问题 Unanswered question"]], report.unanswered_top || []);
  simpleTable($("#broadcasts"), [["name", "群发 Broadcast"], ["targeted", "目标 Targeted"], ["skipped", "跳过 Skipped"],
    ["sent", "已发 Sent"], ["delivered", "送达 Delivered"], ["failed", "失败 Failed"], ["replied", "回复 Replied"],
    ["opted_out", "退订 Opted out"]], report.broadcasts || []);
}

function simpleTable(table, columns, rows) {
  // Customer questions are untrusted: text nodes only.
  const head = document.createElement("tr");
  for (const [, title] of columns) { const th = document.createElement("th"); th.textContent = title; head.append(th); }
  const body = rows.map((r) => {
    const tr = document.createElement("tr");
    for (const [key] of columns) { const td = document.createElement("td"); td.textContent = String(r[key] ?? ""); tr.append(td); }
    return tr;
  });
  table.replaceChildren(head, ...body);
}

async function load() {
  const q = query();
  $("#csv-report").href = `/api/v1/desk/reports.csv?${q}`;
  $("#csv-daily").href = `/api/v1/desk/reports/timeseries.csv?${q}`;
  $("#status").textContent = "加载中… Loading…";
  const resp = await fetch(`/api/v1/desk/reports?${q}`, { credentials: "same-origin" });
  if (resp.status === 401) { $("#status").textContent = "请先登录 Please log in at /"; return; }
  const body = await resp.json();
  if (!resp.ok) { $("#status").textContent = body.error?.message || `HTTP ${resp.status}`; return; }
  render(body);
  form.elements.from.value = body.from.slice(0, 10);
  form.elements.to.value = shiftDay(body.to.slice(0, 10), -1);  // the API's end is local midnight, exclusive
  $("#status").textContent = `${form.elements.from.value} – ${form.elements.to.value} (${body.timezone})`;
  document.body.dataset.ready = "1";
}

const form = $("#filters");
const params = new URLSearchParams(location.search);
form.elements.to.value = params.get("to") || "";
form.elements.from.value = params.get("from") || "";
form.elements.group_by.value = params.get("group_by") || "none";
form.addEventListener("submit", (e) => { e.preventDefault(); load().catch((err) => { $("#status").textContent = String(err); }); });
load().catch((err) => { $("#status").textContent = String(err); });
