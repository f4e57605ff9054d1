// WeCom admin pieces: setup help in the inbox form, and acquisition links (kf links, 渠道活码) with QR codes.
import { get, post } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

export const WECOM_TYPES = ["wecom_kf", "wecom_contacts"];

/** Setup steps for a WeCom channel type (null for other types). */
export function wecomHelp(type) {
  return WECOM_TYPES.includes(type) ? h("p.help", { "data-testid": "wecom-help", text: t("wecom.help." + type) }) : null;
}

/** A form value for object / array settings: JSON for objects, a comma list for arrays. */
export function structuredValue(el) {
  const raw = el.value.trim();
  if (el.dataset.kind === "object") return JSON.parse(raw);
  return raw.split(/[,，\n]/).map((s) => s.trim()).filter(Boolean);
}

/** Buttons shown on a WeCom inbox's row. */
export function wecomActions(inbox, panel) {
  if (!WECOM_TYPES.includes(inbox.channel_type)) return [];
  const ways = h("button", { "data-testid": "wecom-ways", text: t("wecom.ways"), on: { click: () => showWays(inbox, panel) } });
  const sync = h("button", { text: t("wecom.sync"), on: { click: async () => {
    try {
      const r = await post(`/inboxes/${inbox.id}/wecom/sync`);
      toast(t("wecom.synced", { n: r.contacts ?? r.stored ?? 0 }), "ok", 3000);
    } catch (err) {
      toast(err.message);
    }
  } } });
  return [" ", ways, " ", sync];
}

async function showWays(inbox, panel) {
  const data = await get(`/inboxes/${inbox.id}/wecom/ways`);
  const rows = data.items.map((w) => h("tr", { "data-testid": "wecom-way" }, h("td", { text: w.name }), h("td", {}, h("code", { text: w.scene })),
    h("td", {}, w.url ? [h("a", { href: w.url, target: "_blank", rel: "noopener", text: w.url }), h("br"),
      h("img.qr", { src: `/api/v1/wecom/ways/${w.id}/qr.svg`, alt: w.scene, width: 132, height: 132, "data-testid": "wecom-qr" })]
      // WeCom hosts the 渠道活码 image; the page's policy loads images from this server only: a link.
      : w.qr_code ? h("a", { href: w.qr_code, target: "_blank", rel: "noopener noreferrer", text: t("wecom.open_qr") }) : ""),
    h("td", { "data-testid": "way-customers", text: String(w.customers) }), h("td", { text: String(w.conversations) })));
  const error = h("p.error", { role: "alert", hidden: true });
  const fields = [["name", "wecom.way_name", true], ["scene", "wecom.scene", true]];
  if (inbox.channel_type === "wecom_contacts") fields.push(["users", "wecom.users", true]);
  fields.push(["welcome_text", "wecom.welcome", false]);
  const form = h("form.inline-form", { "data-testid": "wecom-way-form" },
    fields.map(([name, label, required]) => h("label.field", {}, h("span", { text: t(label) }), h("input", { name, required }))),
    h("button.primary", { type: "submit", text: t("wecom.create_way") }), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const v = Object.fromEntries(new FormData(form));
    try {
      await post(`/inboxes/${inbox.id}/wecom/ways`, { name: v.name.trim(), scene: v.scene.trim(),
        users: (v.users || "").split(/[,，\s]+/).filter(Boolean), welcome_text: v.welcome_text || null });
      showWays(inbox, panel);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  replace(panel, h("h3", { text: t("wecom.ways_title", { name: inbox.name }) }),
    rows.length ? h("table.grid", {}, h("tr", {}, ["wecom.way_name", "wecom.scene", "wecom.link", "wecom.customers", "wecom.conversations"]
      .map((k) => h("th", { text: t(k) }))), rows) : h("p.muted", { text: t("wecom.no_ways") }),
    form, h("button", { text: t("wecom.close"), on: { click: () => replace(panel) } }));
  panel.scrollIntoView({ block: "nearest" });
}
