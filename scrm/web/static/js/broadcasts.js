// Broadcasts: the list with status and progress (refreshing while any is running); /broadcasts/new and
// drafts open the composer, started ones their progress report.
import { get } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { channelTag, frame, routedPage, statusChip } from "./marketing.js";
import { actionButtons, progressBar } from "./broadcasts_report.js";

const LIVE = ["running", "paused"];
const REFRESH_MS = 3000;

export function broadcastsPage(path) {
  return routedPage("broadcasts", path, (p, reopen) => {
    const m = p.match(/^\/broadcasts\/(new|\d+)$/);
    if (!m) return list();
    if (m[1] === "new") return import("./broadcasts_compose.js").then((mod) => mod.composer(null, reopen));
    return get(`/broadcasts/${m[1]}`).then((b) => (["draft", "scheduled"].includes(b.status)
      ? import("./broadcasts_compose.js").then((mod) => mod.composer(b, reopen))
      : import("./broadcasts_report.js").then((mod) => mod.reportView(b))));
  });
}

async function list() {
  const [{ broadcasts }, { segments }, { items: inboxes }] = await Promise.all([get("/broadcasts"), get("/segments"), get("/inboxes")]);
  const segName = new Map(segments.map((s) => [s.id, s.name]));
  const inboxBy = new Map(inboxes.map((i) => [i.id, i]));
  const body = h("tbody");
  const reports = new Map(); // id -> last report, for rows that have recipients
  let timer = null;

  function row(b) {
    const rep = reports.get(b.id);
    const when = b.finished_at || b.started_at || b.scheduled_at || b.created_at;
    return h("tr", { "data-testid": "broadcast-row", dataset: { id: String(b.id), status: b.status } },
      h("td", {}, h("a", { href: `/broadcasts/${b.id}`, "data-link": "", "data-testid": "broadcast-link", text: b.name || `#${b.id}` })),
      h("td", {}, statusChip(b.status)),
      h("td", { text: b.segment_id ? segName.get(b.segment_id) || `#${b.segment_id}` : t("mk.broadcasts.custom_rules") }),
      h("td", {}, (b.inbox_ids || []).map((id) => (inboxBy.get(id) ? channelTag(inboxBy.get(id).channel_type) : `#${id}`))),
      h("td", {}, rep ? [progressBar(rep), h("span.muted", { text: " " + t("mk.report.short", { sent: rep.sent, targeted: rep.targeted }) })] : null),
      h("td.muted", { text: `${label(b)} ${fmtTime(when)}` }),
      h("td", {}, actionButtons(b, refresh)));
  }
  const label = (b) => t(b.finished_at ? "mk.broadcasts.finished" : b.started_at ? "mk.broadcasts.started"
    : b.scheduled_at ? "mk.broadcasts.scheduled_for" : "mk.broadcasts.created");

  async function refresh() {
    clearTimeout(timer);
    const fresh = (await get("/broadcasts")).broadcasts;
    await Promise.all(fresh.filter((b) => !["draft", "scheduled"].includes(b.status)).slice(0, 30)
      .map((b) => get(`/broadcasts/${b.id}/report`).then((r) => reports.set(b.id, r)).catch(() => {})));
    replace(body, fresh.length ? fresh.map(row) : h("tr", {}, h("td.empty", { colspan: 7, text: t("mk.broadcasts.none") })));
    if (fresh.some((b) => LIVE.includes(b.status))) timer = setTimeout(() => refresh().catch(() => {}), REFRESH_MS);
  }
  replace(body, broadcasts.map(row));
  await refresh();
  const newBtn = h("a.button.primary", { href: "/broadcasts/new", "data-link": "", "data-testid": "broadcast-new", text: t("mk.broadcasts.new") });
  return {
    el: frame("broadcasts", t("nav.broadcasts"), newBtn,
      h("table.grid", { "data-testid": "broadcasts-table" }, h("thead", {}, h("tr", {},
        [t("mk.name"), t("mk.status"), t("mk.broadcasts.audience"), t("mk.channels"), t("mk.report.progress"), t("mk.broadcasts.when"), ""]
          .map((x) => h("th", { text: x })))), body)),
    destroy: () => clearTimeout(timer),
  };
}
