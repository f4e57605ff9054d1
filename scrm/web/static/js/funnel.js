// The broadcast funnel (reached -> clicked -> replied -> converted, with the orders' value) as an SVG chart.
// Every label is a text node: nothing from the data becomes markup.
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { COLORS } from "./charts.js";
import { fmtNum } from "./marketing.js";

const NS = "http://www.w3.org/2000/svg";
const STEPS = ["reached", "clicked", "replied", "converted"];

function svg(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function fmtMoney(value) {
  return new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(value ?? 0);
}

/** A funnel card for a broadcast report's `funnel` ({reached, clicked, replied, converted, orders, value}). */
export function funnelView(funnel) {
  if (!funnel) return null;
  const width = 640, row = 44, label = 110, height = STEPS.length * row + 8;
  const top = Math.max(1, funnel.reached || 0);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": t("cp.funnel"), "data-testid": "funnel-chart" });
  STEPS.forEach((step, i) => {
    const n = funnel[step] || 0;
    const w = Math.max(2, ((width - label - 120) * n) / top);
    const x = label + (width - label - 120 - w) / 2; // centred bars: the funnel shape
    const y = 4 + i * row;
    chart.append(svg("text", { x: label - 8, y: y + row / 2 + 4, "text-anchor": "end" }, t("cp.funnel." + step)));
    const bar = svg("rect", { x, y: y + 4, width: w, height: row - 10, rx: 4, fill: COLORS[i % COLORS.length] });
    bar.append(svg("title", {}, `${t("cp.funnel." + step)}: ${n}`));
    chart.append(bar);
    const pct = i && funnel.reached ? ` · ${Math.round((n * 100) / funnel.reached)}%` : "";
    chart.append(svg("text", { x: width - 112, y: y + row / 2 + 4 }, fmtNum(n) + pct));
  });
  return h("section.mk-card.funnel", { "data-testid": "funnel" },
    h("h3", { text: t("cp.funnel") }),
    h("div.funnel-steps", {}, STEPS.map((step) => h("span.funnel-step", { "data-testid": "funnel-step", dataset: { step, value: String(funnel[step] || 0) } },
      h("strong", { text: fmtNum(funnel[step]) }), " ", h("span", { text: t("cp.funnel." + step) }),
      step !== "reached" && funnel.reached ? h("span.muted", { text: " " + t("cp.funnel.rate", { pct: Math.round(((funnel[step] || 0) * 100) / funnel.reached) }) }) : null))),
    chart,
    h("p", { "data-testid": "funnel-value", dataset: { value: String(funnel.value || 0) }, text: t("cp.funnel.value", { value: fmtMoney(funnel.value), orders: fmtNum(funnel.orders) }) }),
    h("p.muted", { text: t("cp.funnel.hint") }));
}
