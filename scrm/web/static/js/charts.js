// Tiny dependency-free SVG charts: a multi-series line chart and a grouped bar chart.
const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#db2777", "#7c3aed"];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((x) => x >= v);
}

function frame(width, height, max, pad) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((height - pad.t - pad.b) * i) / 4;
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, stroke: "#e2e8f0" }));
    const value = max - (max * i) / 4;
    svg.append(el("text", { x: pad.l - 6, y: y + 4, "text-anchor": "end" }, Number.isInteger(value) ? value : value.toFixed(1)));
  }
  return svg;
}

export function legend(series) {
  const div = document.createElement("div");
  div.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i % COLORS.length];
    item.append(swatch, document.createTextNode(s.name));
    div.append(item);
  });
  return div;
}

/** labels: x labels; series: [{name, values}] */
export function lineChart(labels, series, { width = 900, height = 260 } = {}) {
  const pad = { t: 10, r: 10, b: 28, l: 44 };
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const svg = frame(width, height, max, pad);
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const x = (i) => pad.l + (labels.length <= 1 ? w / 2 : (w * i) / (labels.length - 1));
  const y = (v) => pad.t + h - (h * v) / max;
  const step = Math.max(1, Math.ceil(labels.length / 10));
  labels.forEach((lab, i) => {
    if (i % step === 0) svg.append(el("text", { x: x(i), y: height - 8, "text-anchor": "middle" }, lab.slice(5)));
  });
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 2 }));
    s.values.forEach((v, i) => {
      const dot = el("circle", { cx: x(i), cy: y(v), r: 2.5, fill: COLORS[k % COLORS.length] });
      dot.append(el("title", {}, `${labels[i]} ${s.name}: ${v}`));
      svg.append(dot);
    });
  });
  return svg;
}

/** categories: group labels; series: [{name, values}] drawn side by side per category */
export function barChart(categories, series, { width = 900, height = 260 } = {}) {
  const pad = { t: 10, r: 10, b: 40, l: 44 };
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => v || 0))));
  const svg = frame(width, height, max, pad);
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const band = w / Math.max(1, categories.length);
  const bar = Math.min(40, (band * 0.8) / Math.max(1, series.length));
  categories.forEach((cat, i) => {
    const x0 = pad.l + band * i + (band - bar * series.length) / 2;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      const bh = (h * v) / max;
      const rect = el("rect", { x: x0 + k * bar, y: pad.t + h - bh, width: bar - 2, height: bh, fill: COLORS[k % COLORS.length], rx: 2 });
      rect.append(el("title", {}, `${cat} ${s.name}: ${v}`));
      svg.append(rect);
    });
    svg.append(el("text", { x: pad.l + band * i + band / 2, y: height - 22, "text-anchor": "middle" }, String(cat).slice(0, 16)));
  });
  return svg;
}
