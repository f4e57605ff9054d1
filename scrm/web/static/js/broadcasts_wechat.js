// The composer's WeChat Official Account section: how OA followers get the broadcast (standard: customer-service
// message inside the 48-hour window, 订阅通知 outside it with consent; 群发 by list / tag / all; 订阅通知 only),
// the account's 群发 quota shown before sending, and a preview to a test follower. Template messages are
// for service notices only (WeChat's rule), so no broadcast uses them: the section says so.
import { get, post } from "./api.js";
import { h, select } from "./dom.js";
import { t } from "./i18n.js";
import { busy, fieldBox } from "./marketing.js";
import { toast } from "./toast.js";

/** `b`: the broadcast or null; `checks`: the inbox checkboxes; `saveDraft()` saves and returns the draft. */
export function wechatSection(b, checks, saveDraft) {
  const opts = b?.delivery_options || {};
  const mode = select([["standard", t("wx.mode.standard")], ["mass", t("wx.mode.mass")], ["subscribe", t("wx.mode.subscribe")]],
    b?.delivery_mode || "standard", { "data-testid": "wx-mode", "aria-label": t("wx.mode") });
  const target = select([["list", t("wx.target.list")], ["tag", t("wx.target.tag")], ["all", t("wx.target.all")]],
    opts.target || "list", { "data-testid": "wx-target", "aria-label": t("wx.target") });
  const tagId = h("input", { type: "number", min: 0, class: "num", value: opts.tag_id ?? "", "data-testid": "wx-tag-id" });
  const templateId = h("input", { maxlength: 128, value: opts.template_id || "", "data-testid": "wx-template-id" });
  const url = h("input", { maxlength: 500, value: opts.url || "", "data-testid": "wx-url", placeholder: "https://" });
  const quota = h("p.muted", { "data-testid": "wx-quota" });
  const openid = h("input", { maxlength: 64, "data-testid": "wx-preview-openid", placeholder: "OpenID" });
  const previewBtn = h("button", { type: "button", "data-testid": "wx-preview-btn", text: t("wx.preview") });
  const massBox = h("div", {}, fieldBox(t("wx.target"), target), fieldBox(t("wx.tag_id"), tagId), quota,
    h("p.muted", { text: t("wx.mass_hint") }),
    fieldBox(t("wx.preview_to"), h("div.row", {}, openid, previewBtn)));
  const subscribeBox = h("div", {}, fieldBox(t("wx.template_id"), templateId), fieldBox(t("wx.url"), url),
    h("p.muted", { "data-testid": "wx-subscribe-hint", text: t("wx.subscribe_hint") }));
  const section = h("div.wx-section", { "data-testid": "wx-section" }, h("h4", { text: t("wx.title") }),
    fieldBox(t("wx.mode"), mode), massBox, subscribeBox,
    h("p.muted", { "data-testid": "wx-template-note", text: t("wx.template_note") }));

  const wechatInbox = () => checks.find((c) => c.checked && c.dataset.channel === "wechat_oa");
  async function showQuota() {
    const inbox = wechatInbox();
    if (!inbox || mode.value !== "mass") return;
    try {
      const q = await get(`/inboxes/${inbox.value}/wechat/mass-quota`);
      quota.textContent = t(q.account_type === "subscription" ? "wx.quota.subscription" : "wx.quota.service",
        { used: q.used, limit: q.limit, remaining: q.remaining, capped: q.followers_at_limit ?? 0 });
      quota.dataset.remaining = String(q.remaining);
    } catch (err) {
      quota.textContent = err.message;
    }
  }
  function sync() {
    section.hidden = !wechatInbox();
    massBox.hidden = mode.value !== "mass";
    subscribeBox.hidden = mode.value === "mass";
    tagId.closest(".field")?.toggleAttribute("hidden", target.value !== "tag");
    showQuota();
  }
  for (const c of checks) c.addEventListener("change", sync);
  mode.addEventListener("change", sync);
  target.addEventListener("change", sync);
  previewBtn.addEventListener("click", () => busy(previewBtn, async () => {
    if (!openid.value.trim()) throw new Error(t("wx.preview_needs_openid"));
    const saved = await saveDraft();
    await post(`/broadcasts/${saved.id}/wechat/preview`, { openid: openid.value.trim() });
    toast(t("wx.preview_sent", { openid: openid.value.trim() }), "ok", 4000);
  }, (err) => toast(err.message, "error", 5000)));
  sync();

  /** The fields this section adds to the saved broadcast. */
  function fields() {
    if (!wechatInbox()) return { delivery_mode: "standard", delivery_options: {} };
    if (mode.value === "mass") {
      const options = { target: target.value };
      if (target.value === "tag") options.tag_id = Number(tagId.value);
      return { delivery_mode: "mass", delivery_options: options };
    }
    const options = {};
    if (templateId.value.trim()) options.template_id = templateId.value.trim();
    if (url.value.trim()) options.url = url.value.trim();
    return { delivery_mode: mode.value, delivery_options: options };
  }
  return { el: section, fields, refresh: showQuota };
}

/** A 群发 broadcast's batches and WeChat's counts from MASSSENDJOBFINISH (the report's WeChat block). */
export function massResults(mass) {
  const counts = ["total_count", "filter_count", "sent_count", "error_count"];
  return h("div", { "data-testid": "wx-mass-results" }, h("h4", { text: t("wx.results") }),
    h("p.muted", { text: t("wx.results_hint") }),
    h("table.grid", {},
      h("tr", {}, h("th", { text: "clientmsgid" }), h("th", { text: t("wx.batch_status") }), h("th", { text: "msg_id" }),
        counts.map((c) => h("th", { text: t("wx." + c) }))),
      mass.batches.map((b) => h("tr", { "data-testid": "wx-batch", dataset: { status: b.status } },
        h("td", { text: b.clientmsgid }), h("td", { text: t("wx.batch." + b.status) + (b.last_error ? ` (${b.last_error})` : "") }),
        h("td", { text: b.msg_id || "" }), counts.map((c) => h("td.num", { text: b[c] == null ? "–" : String(b[c]) })))),
      h("tr", { "data-testid": "wx-mass-total" }, h("th", { text: t("wx.total") }), h("td"), h("td"),
        counts.map((c) => h("td.num", { text: String(mass[c] ?? 0) })))));
}
