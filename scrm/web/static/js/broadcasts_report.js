// A started broadcast: progress and report (sent, delivered, failed and skipped by reason, replies,
// opt-outs, per channel), pause/resume/cancel, recipients CSV; refreshes itself while deliveries are in flight.
import { get, post } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { busy, channelTag, errorLine, fmtNum, frame, label, statusChip } from "./marketing.js";
import { toast } from "./toast.js";
import { massResults } from "./broadcasts_wechat.js";
import { funnelView } from "./funnel.js";

const REFRESH_MS = 1500;
const STATS = ["targeted", "queued", "paused", "sent", "delivered", "failed", "skipped", "cancelled", "replied", "opted_out"];

export function progressBar(rep) {
  const pct = Math.round((rep.progress ?? 0) * 100);
  return h("span.progress", { role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100, "data-testid": "progress", title: pct + "%" },
    h("span.progress-fill", { style: `width:${pct}%` }));
}

/** Pause / resume / cancel as the broadcast's status allows; `after` runs when one succeeded. */
export function actionButtons(b, after) {
  const verbs = { running: ["pause", "cancel"], paused: ["resume", "cancel"], scheduled: ["cancel"] }[b.status] || [];
  return verbs.map((verb) => {
    const btn = h("button", { class: verb === "cancel" ? "danger" : null, "data-testid": "broadcast-" + verb, text: t("mk.broadcasts." + verb) });
    btn.addEventListener("click", () => {
      if (verb === "cancel" && !btn.dataset.armed) { // a second click confirms: cancelling cannot be undone
        btn.dataset.armed = "1";
        btn.textContent = t("mk.broadcasts.cancel_confirm");
        return;
      }
      busy(btn, async () => {
        const res = await post(`/broadcasts/${b.id}/${verb}`);
        toast(t("mk.broadcasts.done_" + verb, { n: res.deliveries ?? 0 }), "ok", 3000);
        await after(res);
      }, (err) => toast(err.message));
    });
    return btn;
  });
}

function reasonTable(title, byReason, testid) {
  const entries = Object.entries(byReason || {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return null;
  return h("div", {}, h("h4", { text: title }), h("table.grid.reasons", { "data-testid": testid },
    entries.map(([reason, n]) => h("tr", { dataset: { reason } }, h("td", { text: label("mk.reason", reason) }),
      h("td", {}, h("code", { text: reason })), h("td.num", { text: fmtNum(n) })))));
}

export async function reportView(b) {
  const inboxes = new Map((await get("/inboxes")).items.map((i) => [i.id, i]));
  const head = h("div.report-head");
  const stats = h("div.stats", { "data-testid": "report-stats" });
  const details = h("div.report-details");
  const actions = h("span.mk-actions");
  const error = errorLine("report-error");
  let timer = null;
  let gone = false;

  function render(rep, bc) {
    const pct = Math.round((rep.progress ?? 0) * 100);
    replace(head, statusChip(bc.status, "report-status"), " ",
      progressBar(rep), h("span.pct", { "data-testid": "report-progress", text: pct + "%" }),
      h("span.muted", { text: [
        bc.scheduled_at && !bc.started_at ? t("mk.broadcasts.scheduled_for") + " " + fmtTime(bc.scheduled_at, { full: true }) : "",
        bc.started_at ? t("mk.broadcasts.started") + " " + fmtTime(bc.started_at, { full: true }) : "",
        bc.finished_at ? " · " + t("mk.broadcasts.finished") + " " + fmtTime(bc.finished_at, { full: true }) : "",
      ].join("") }));
    replace(stats, STATS.map((k) => h("div.stat", { "data-testid": "stat-" + k, dataset: { value: String(rep[k] ?? 0) } },
      h("strong", { text: fmtNum(rep[k]) }), h("span", { text: t("mk.report." + k) }))));
    const channels = Object.entries(rep.by_channel || {});
    replace(details,
      funnelView(rep.funnel),
      reasonTable(t("mk.report.skipped_by_reason"), rep.skipped_by_reason, "skipped-reasons"),
      reasonTable(t("mk.report.failed_by_reason"), rep.failed_by_reason, "failed-reasons"),
      rep.wechat_mass ? massResults(rep.wechat_mass) : null,
      channels.length ? h("div", {}, h("h4", { text: t("mk.report.by_channel") }), h("table.grid", { "data-testid": "by-channel" },
        h("tr", {}, h("th", { text: t("mk.channels") }), ["queued", "sent", "delivered", "failed", "skipped", "cancelled"].map((s) => h("th", { text: label("mk.status", s) }))),
        channels.map(([ch, counts]) => h("tr", {}, h("td", {}, ch === "none" ? h("span", { text: t("mk.report.no_channel") }) : channelTag(ch)),
          ["queued", "sent", "delivered", "failed", "skipped", "cancelled"].map((s) => h("td.num", { text: fmtNum((counts[s] || 0) + (s === "queued" ? counts.paused || 0 : 0)) })))))) : null);
    replace(actions, actionButtons(bc, () => refresh()),
      h("a.button", { href: `/api/v1/broadcasts/${bc.id}/recipients.csv`, download: `broadcast-${bc.id}-recipients.csv`, "data-testid": "report-csv", text: t("mk.report.csv") }));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const bc = await get(`/broadcasts/${b.id}`);
      if (gone) return;
      error.hide();
      render(bc.report, bc);
      // "running" turns "completed" once the scheduler sees nothing in flight: keep polling until then.
      if (bc.status === "running" || bc.status === "paused") timer = setTimeout(refresh, REFRESH_MS);
    } catch (err) {
      if (gone) return;
      error.show(err);
      timer = setTimeout(refresh, REFRESH_MS * 3);
    }
  }
  render(b.report, b);
  if (b.status === "running" || b.status === "paused") timer = setTimeout(refresh, REFRESH_MS);

  const message = h("section.mk-card", {}, h("h3", { text: t("mk.compose.message") }),
    b.subject ? h("p", {}, h("strong", { text: t("mk.compose.subject") + ": " }), h("span", { text: b.subject })) : null,
    h("pre.template", { text: b.template || "" }),
    h("p", {}, (b.inbox_ids || []).map((id) => inboxes.get(id) ? [channelTag(inboxes.get(id).channel_type), " ", h("span.muted", { text: inboxes.get(id).name }), " "] : `#${id} `)),
    b.last_error ? h("p.error", { text: b.last_error }) : null);
  return {
    el: frame("broadcasts", b.name || `#${b.id}`, h("span.mk-actions", {}, actions, h("a.button", { href: "/broadcasts", "data-link": "", text: t("mk.back") })),
      h("section.mk-card.report", { "data-testid": "report" }, head, stats, error.el, details), message),
    destroy: () => {
      gone = true;
      clearTimeout(timer);
    },
  };
}

