// Channel icons as inline SVG built with createElementNS (constant shapes, no markup parsing).
const NS = "http://www.w3.org/2000/svg";

const SHAPES = {
  api: { color: "#475569", paths: ["M9 8l-5 4 5 4M15 8l5 4-5 4"], stroke: true },
  telegram: { color: "#229ed9", paths: ["M3 11.5l17-6.5-3 15-5-4-3 3v-5l8-7-10 6z"] },
  wechat_oa: { color: "#07c160", paths: ["M9 4C5 4 2 6.7 2 10c0 1.9 1 3.5 2.6 4.6L4 17l2.7-1.4c.7.2 1.5.3 2.3.3", "M15 9c-3.9 0-7 2.5-7 5.5S11.1 20 15 20c.7 0 1.4-.1 2-.3L19.5 21l-.6-2.1c1.3-1 2.1-2.4 2.1-3.9C21 11.5 18.9 9 15 9z"] },
  wecom_kf: { color: "#2b7cf6", paths: ["M12 3C7 3 3 6.6 3 11c0 2.4 1.2 4.5 3 6l-.6 3 3.2-1.7c1 .3 2.2.5 3.4.5 5 0 9-3.6 9-8s-4-8-9-8z", "M8 10h8M8 13h5"], stroke: true },
  wecom_contacts: { color: "#2b7cf6", paths: ["M9 11a4 4 0 100-8 4 4 0 000 8z", "M2 21c.8-4 3.6-6 7-6s6.2 2 7 6", "M17 11a3 3 0 100-6M22 20c-.5-2.6-2-4.3-4-5"], stroke: true },
  email: { color: "#ea580c", paths: ["M3 6h18v12H3z", "M3 6l9 7 9-7"], stroke: true },
  memory: { color: "#7c3aed", paths: ["M12 3a5 5 0 015 5v2a5 5 0 01-10 0V8a5 5 0 015-5z", "M4 21c1-4 4-6 8-6s7 2 8 6"], stroke: true },
};

/** An icon for a channel type (a neutral dot for unknown types). */
export function channelIcon(type, size = 16) {
  const shape = SHAPES[type] || { color: "#94a3b8", paths: ["M12 6a6 6 0 110 12 6 6 0 010-12z"] };
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("class", "channel-icon");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", type || "channel");
  svg.dataset.channel = type || "";
  for (const d of shape.paths) {
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d);
    if (shape.stroke) {
      p.setAttribute("fill", "none");
      p.setAttribute("stroke", shape.color);
      p.setAttribute("stroke-width", "2");
      p.setAttribute("stroke-linecap", "round");
      p.setAttribute("stroke-linejoin", "round");
    } else {
      p.setAttribute("fill", shape.color);
    }
    svg.appendChild(p);
  }
  return svg;
}
