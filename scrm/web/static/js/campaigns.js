// Campaigns: the list with counts, a campaign's WeChat QR codes (create: temporary or permanent, with a
// welcome message) and report, and the churn warning list with the reasons behind each score.
import { api, get, post } from "./api.js";
import { h, replace, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { busy, errorLine, fieldBox, fmtNum, frame, routedPage } from "./marketing.js";
import { fmtMoney } from "./funnel.js";
import { toast } from "./toast.js";
import { navigate } from "./router.js";
import { isAdmin } from "./state.js";

const STATS = ["scans", "new_followers", "contacts", "first_touch_contacts", "conversations", "orders", "value"];

export function campaignsPage(path) {
  return routedPage("campaigns", path, (p, reopen) => {
    if (p === "/campaigns/churn") return churnView();
    const m = p.match(/^\/campaigns\/(\d+)$/);
    return m ? detail(m[1], reopen) : list();
  });
}

function tabs(active) {
  return h("nav.mk-tabs", {},
    h("a", { href: "/campaigns", "data-link": "", class: active === "list" ? "active" : null, text: t("cp.title") }), " · ",
    h("a", { href: "/campaigns/churn", "data-link": "", "data-testid": "churn-tab", class: active === "churn" ? "active" : null, text: t("cp.churn_tab") }));
}

function stats(rep, testid = "campaign-stats") {
  return h("div.stats", { "data-testid": testid }, STATS.map((k) => h("div.stat", { "data-testid": "cstat-" + k, dataset: { value: String(rep[k] ?? 0) } },
    h("strong", { text: k === "value" ? fmtMoney(rep[k]) : fmtNum(rep[k]) }), h("span", { text: t("cp." + k) }))));
}

/** One button per Official Account: pull its followers (and their tags) into contacts now. */
function followerSync(inboxes) {
  const oa = inboxes.filter((i) => i.channel_type === "wechat_oa");
  if (!oa.length) return null;
  return h("section.mk-card", {}, h("h3", { text: t("cp.sync.title") }), h("p.muted", { text: t("cp.sync.hint") }),
    oa.map((i) => {
      const btn = h("button", { "data-testid": "follower-sync", dataset: { inbox: String(i.id) }, text: t("cp.sync.run", { name: i.name }) });
      btn.addEventListener("click", () => busy(btn, async () => {
        const res = await post(`/inboxes/${i.id}/wechat/follower-sync`);
        toast(t("cp.sync.done", { total: res.total || 0, created: res.created || 0, merged: res.merged || 0 }), "ok", 4000);
      }, (err) => toast(err.message)));
      return [btn, " "];
    }));
}

async function list() {
  const [{ campaigns }, { items: inboxes }] = await Promise.all([get("/campaigns"), get("/inboxes")]);
  const name = h("input", { "data-testid": "campaign-name", maxlength: 120, placeholder: t("cp.name") });
  const description = h("input", { "data-testid": "campaign-description", maxlength: 2000, placeholder: t("cp.description") });
  const error = errorLine("campaign-error");
  const create = h("button.primary", { "data-testid": "campaign-create", text: t("cp.create") });
  create.addEventListener("click", () => busy(create, async () => {
    error.hide();
    const c = await post("/campaigns", { name: name.value, description: description.value || null });
    navigate(`/campaigns/${c.id}`);
  }, (err) => error.show(err)));
  const rows = campaigns.map((c) => h("tr", { "data-testid": "campaign-row", dataset: { id: String(c.id) } },
    h("td", {}, h("a", { href: `/campaigns/${c.id}`, "data-link": "", text: c.name })),
    ...["scans", "new_followers", "conversations", "orders"].map((k) => h("td.num", { text: fmtNum(c.report[k]) })),
    h("td.num", { text: fmtMoney(c.report.value) }), h("td.muted", { text: fmtTime(c.created_at) })));
  return {
    el: frame("campaigns", t("cp.title"), tabs("list"),
      h("section.mk-card", {}, h("h3", { text: t("cp.new") }), h("div.mk-row", {}, name, " ", description, " ", create), error.el),
      h("table.grid", { "data-testid": "campaigns-table" },
        h("thead", {}, h("tr", {}, [t("mk.name"), t("cp.scans"), t("cp.new_followers"), t("cp.conversations"), t("cp.orders"), t("cp.value"), ""].map((x) => h("th", { text: x })))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td.empty", { colspan: 7, text: t("cp.none") })))),
      followerSync(inboxes)),
  };
}

function qrCard(q, inboxName) {
  const expiry = q.permanent ? t("cp.qr.never") : t("cp.qr.expires", { at: fmtTime(q.expires_at, { full: true }) });
  return h("div.mk-card.qr-card", { "data-testid": "qr-card", dataset: { scene: q.scene, permanent: String(q.permanent) } },
    h("img", { src: q.image_url, alt: q.scene, width: 160, height: 160, "data-testid": "qr-image" }),
    h("div", {}, h("strong", { text: q.scene }), " ", h("span.chip", { text: q.permanent ? t("cp.qr.permanent") : t("cp.qr.temporary") }),
      h("p.muted", { text: `${inboxName} · ${expiry}` }),
      q.welcome_text ? h("p", { "data-testid": "qr-welcome", text: q.welcome_text }) : null,
      q.url ? h("p", {}, h("code", { text: q.url })) : null));
}

async function detail(id, reopen) {
  const [c, inboxes] = await Promise.all([get(`/campaigns/${id}`), get("/inboxes")]);
  const oa = inboxes.items.filter((i) => i.channel_type === "wechat_oa");
  const names = new Map(inboxes.items.map((i) => [i.id, i.name]));
  const error = errorLine("qr-error");
  let form;
  if (!oa.length) {
    form = h("p.muted", { "data-testid": "qr-no-inbox", text: t("cp.qr.no_inbox") });
  } else {
    const inbox = select(oa.map((i) => [i.id, i.name]), oa[0].id, { "data-testid": "qr-inbox" });
    const kind = select([["temporary", t("cp.qr.temporary")], ["permanent", t("cp.qr.permanent")]], "temporary", { "data-testid": "qr-kind" });
    const days = h("input", { type: "number", min: 1, max: 30, value: "7", "data-testid": "qr-days" });
    const scene = h("input", { maxlength: 64, "data-testid": "qr-scene" });
    const welcome = h("textarea", { rows: 2, maxlength: 2000, "data-testid": "qr-welcome-input" });
    kind.addEventListener("change", () => { days.disabled = kind.value === "permanent"; });
    const create = h("button.primary", { "data-testid": "qr-create", text: t("cp.qr.create") });
    create.addEventListener("click", () => busy(create, async () => {
      error.hide();
      await post(`/campaigns/${id}/qr-codes`, { inbox_id: Number(inbox.value), permanent: kind.value === "permanent",
        expire_seconds: Math.round(Number(days.value || 7) * 86400), scene: scene.value.trim() || null, welcome_text: welcome.value.trim() || null });
      toast(t("cp.qr.created"), "ok", 2000);
      reopen();
    }, (err) => error.show(err)));
    form = h("div.qr-form", {}, fieldBox(t("cp.qr.inbox"), inbox), fieldBox(t("cp.qr.kind"), kind), fieldBox(t("cp.qr.days"), days),
      fieldBox(t("cp.qr.scene"), scene), fieldBox(t("cp.qr.welcome"), welcome), create, error.el);
  }
  return {
    el: frame("campaigns", c.name, h("a.button", { href: "/campaigns", "data-link": "", text: t("mk.back") }),
      c.description ? h("p.muted", { text: c.description }) : null,
      h("section.mk-card", {}, stats(c.report)),
      h("section.mk-card", {}, h("h3", { text: t("cp.qr.title") }), h("p.muted", { text: t("cp.qr.hint") }), form,
        h("div.qr-list", { "data-testid": "qr-list" }, c.qr_codes.length ? c.qr_codes.map((q) => qrCard(q, names.get(q.inbox_id) || `#${q.inbox_id}`))
          : h("p.muted", { text: t("cp.qr.none") })))),
  };
}

/** One reason of a churn score in words (numbers filled in as text). */
export function reasonText(r) {
  const vars = { ...r, channels: (r.channels || []).join(", ") };
  return `${t("cp.churn.rule." + r.rule, vars)} (+${r.points})`;
}

const WEIGHTS = ["silent", "fading", "unanswered", "low_csat", "open_tickets", "opted_out"];
const LIMITS = [["threshold", 1, 100], ["silent_days", 1, 365], ["period_days", 1, 180], ["unanswered_hours", 1, 720], ["csat_days", 1, 365]];

/** Admins tune the rules: each rule's points, the threshold and the periods; the conversion window too. */
async function rulesForm(after) {
  const settings = await get("/marketing-settings");
  const inputs = new Map();
  const num = (key, value, min, max) => {
    const el = h("input", { type: "number", min, max, step: 1, value: String(value), class: "num", "data-testid": "rule-" + key });
    inputs.set(key, el);
    return fieldBox(t("cp.rules." + key), el);
  };
  const error = errorLine("rules-error");
  const save = h("button.primary", { "data-testid": "rules-save", text: t("mk.save") });
  save.addEventListener("click", () => busy(save, async () => {
    error.hide();
    const v = (k) => Number(inputs.get(k).value);
    const churn = { weights: Object.fromEntries(WEIGHTS.map((w) => [w, v(w)])), ...Object.fromEntries(LIMITS.map(([k]) => [k, v(k)])) };
    await api("PUT", "/marketing-settings", { settings: { conversion_window_days: v("conversion_window_days"), churn } });
    toast(t("mk.saved"), "ok", 2000);
    await after();
  }, (err) => error.show(err)));
  return h("details.mk-card", { "data-testid": "churn-rules" }, h("summary", { text: t("cp.rules.title") }),
    h("div.qr-form", {}, WEIGHTS.map((w) => num(w, settings.churn.weights[w], 0, 100)),
      LIMITS.map(([k, lo, hi]) => num(k, settings.churn[k], lo, hi)),
      num("conversion_window_days", settings.conversion_window_days, 1, 90)), save, error.el);
}

async function churnView() {
  const body = h("tbody");
  const note = h("p.muted", { "data-testid": "churn-threshold" });
  async function load() {
    const data = await get("/churn-risk");
    note.textContent = t("cp.churn.threshold", { n: data.threshold });
    replace(body, data.items.length ? data.items.map((i) => h("tr", { "data-testid": "churn-row", dataset: { contact: String(i.contact_id), score: String(i.score) } },
      h("td", {}, h("a", { href: `/contacts/${i.contact_id}`, "data-link": "", text: i.name || `#${i.contact_id}` })),
      h("td.num", { text: String(i.score) }),
      h("td", {}, h("ul.reasons", {}, i.reasons.map((r) => h("li", { "data-testid": "churn-reason", dataset: { rule: r.rule }, text: reasonText(r) }))))))
      : h("tr", {}, h("td.empty", { colspan: 3, text: t("cp.churn.none") })));
  }
  await load();
  const recompute = h("button", { "data-testid": "churn-recompute", text: t("cp.churn.recompute") });
  recompute.addEventListener("click", () => busy(recompute, async () => {
    const res = await post("/churn-risk/recompute");
    toast(t("cp.churn.done", res), "ok", 3000);
    await load();
  }, (err) => toast(err.message)));
  return {
    el: frame("campaigns", t("cp.churn.title"), h("span.mk-actions", {}, tabs("churn"), " ", recompute), note,
      isAdmin() ? await rulesForm(load) : null,
      h("table.grid", { "data-testid": "churn-table" },
        h("thead", {}, h("tr", {}, [t("mk.name"), t("cp.churn.score"), t("cp.churn.why")].map((x) => h("th", { text: x })))), body)),
  };
}
