// Admin: a web chat inbox's widget page: embed code, H5 link and QR code, identity secret, and its settings.
import { get, patch, post } from "./api.js";
import { h, replace, select } from "./dom.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

const STANDARD = ["name", "email", "phone"];

/** The stored identity secret is masked; a new one is generated here and shown this once. */
function identitySecret(inbox, masked) {
  const row = h("div", {}, h("code.copy", { "data-testid": "webchat-secret", text: masked || "" }));
  const button = h("button", { type: "button", "data-testid": "webchat-secret-new", text: t("wc.secret_new"), on: { click: async () => {
    try {
      const res = await post(`/inboxes/${inbox.id}/webchat/identity-secret`);
      replace(row, copyable(res.hmac_secret, "webchat-secret"), h("p.warn", { text: t("wc.secret_once") }));
    } catch (err) {
      toast(err.message, "error", 4000);
    }
  } } });
  return h("div", {}, row, h("p.muted", { text: t("wc.secret_masked") }), button);
}

/** The "Widget" button of a web inbox's row; it opens the panel into `box`. */
export function webchatButton(inbox, box) {
  return h("button", { text: t("wc.open"), "data-testid": "webchat-open", on: { click: () => webchatPanel(inbox, box) } });
}

function copyable(text, testid) {
  const code = h("code.copy", { "data-testid": testid, text });
  const button = h("button", { type: "button", text: t("wc.copy"), on: { click: async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast(t("wc.copied"), "ok", 1500);
    } catch {
      getSelection().selectAllChildren(code);
    }
  } } });
  return h("div.copy-row", {}, code, " ", button);
}

function localized(name, label, value = {}) {
  return h("fieldset.wc-pair", {}, h("legend", { text: label }),
    ["zh", "en"].map((lang) => h("label.field", {}, h("span", { text: t("wc." + lang) }),
      h("input", { name: `${name}.${lang}`, value: value[lang] || "", "data-testid": `wc-${name}-${lang}` }))));
}

export async function webchatPanel(inbox, box) {
  const [info, list] = await Promise.all([get(`/inboxes/${inbox.id}/webchat`), get("/inboxes")]);
  const s = info.settings || {}; // with the defaults filled in
  const fields = new Map((s.prechat_fields || [{ name: "name" }, { name: "email", type: "email", required: true }]).map((f) => [f.name, f]));
  const modes = [["off", t("wc.field_off")], ["optional", t("wc.field_optional")], ["required", t("wc.field_required")]];
  const standard = STANDARD.map((name) => {
    const f = fields.get(name);
    return h("label.field", {}, h("span", { text: t("wc.field." + name) }),
      select(modes, f ? (f.required ? "required" : "optional") : "off", { name: "field." + name, "data-testid": "wc-field-" + name }));
  });
  const custom = h("textarea", { name: "custom", rows: 3, "data-testid": "wc-custom" });
  custom.value = [...fields.values()].filter((f) => !STANDARD.includes(f.name))
    .map((f) => `${f.name} | ${f.label?.zh || f.label?.en || f.name}${f.required ? " | required" : ""}`).join("\n");
  const origins = h("textarea", { name: "origins", rows: 3, "data-testid": "wc-origins" });
  origins.value = (s.allowed_origins || []).join("\n");
  const emailInboxes = list.items.filter((i) => i.channel_type === "email").map((i) => [String(i.id), i.name]);
  const check = (name, label, on) => h("label.check", {}, h("input", { type: "checkbox", name, checked: on, "data-testid": "wc-" + name }), " ", label);
  const error = h("p.error", { role: "alert", hidden: true });
  const form = h("form.webchat-form", { "data-testid": "webchat-form" },
    h("label.field.wide", {}, h("span", { text: t("wc.origins") }), origins, h("small.muted", { text: t("wc.origins_hint") })),
    localized("title", t("wc.chat_title"), s.title), localized("greeting", t("wc.greeting"), s.greeting),
    localized("away_message", t("wc.away"), s.away_message), localized("hours_banner", t("wc.banner"), s.hours_banner),
    h("label.field", {}, h("span", { text: t("wc.color") }), h("input", { type: "color", name: "color", value: s.color || "#2563eb" })),
    check("prechat_enabled", t("wc.prechat"), s.prechat_enabled), h("div.wc-fields", {}, standard),
    h("label.field.wide", {}, h("span", { text: t("wc.custom") }), custom),
    check("require_identity", t("wc.require_identity"), s.require_identity),
    check("offline_email", t("wc.offline_email"), s.offline_email !== false),
    h("label.field", {}, h("span", { text: t("wc.email_inbox") }),
      select([["", t("wc.none")], ...emailInboxes], s.email_inbox_id ?? "", { name: "email_inbox_id" })),
    h("label.field", {}, h("span", { text: t("wc.max_mb") }), h("input", { type: "number", name: "max_mb", min: 1, max: 100,
      value: Math.round((s.max_attachment_bytes || 10485760) / 1048576) })),
    error, h("button.primary", { type: "submit", text: t("wc.save"), "data-testid": "webchat-save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const v = Object.fromEntries(new FormData(form));
    const pair = (name) => ({ zh: v[name + ".zh"] || "", en: v[name + ".en"] || "" });
    const prechat = STANDARD.filter((n) => v["field." + n] !== "off").map((n) => ({ ...(fields.get(n) || {}), name: n,
      type: n === "email" ? "email" : n === "phone" ? "tel" : "text", required: v["field." + n] === "required" }));
    for (const line of v.custom.split("\n").map((x) => x.trim()).filter(Boolean)) {
      const [key, label, req] = line.split("|").map((x) => x.trim());
      prechat.push({ name: key, label: { zh: label || key, en: label || key }, required: req === "required" });
    }
    const settings = { ...s, allowed_origins: v.origins.split("\n").map((x) => x.trim()).filter(Boolean),
      title: pair("title"), greeting: pair("greeting"), away_message: pair("away_message"), hours_banner: pair("hours_banner"),
      color: v.color, prechat_enabled: Boolean(v.prechat_enabled), prechat_fields: prechat,
      require_identity: Boolean(v.require_identity), offline_email: Boolean(v.offline_email),
      email_inbox_id: v.email_inbox_id ? Number(v.email_inbox_id) : null, max_attachment_bytes: Number(v.max_mb) * 1048576 };
    try {
      await patch(`/inboxes/${inbox.id}`, { settings });
      toast(t("wc.saved"), "ok", 2000);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  replace(box, h("section.webchat-admin", { "data-testid": "webchat-panel" }, h("h3", { text: t("wc.title", { name: inbox.name }) }),
    h("h4", { text: t("wc.embed") }), h("p.muted", { text: t("wc.embed_hint") }), copyable(info.script, "webchat-script"),
    h("h4", { text: t("wc.h5") }), copyable(info.h5_url, "webchat-h5"),
    h("img.qr", { src: info.qr_path, alt: t("wc.qr"), width: 180, height: 180, "data-testid": "webchat-qr" }),
    h("h4", { text: t("wc.identity") }), h("p.muted", { text: t("wc.identity_hint") }), identitySecret(inbox, info.hmac_secret),
    h("h4", { text: t("wc.settings") }), form));
  box.scrollIntoView({ block: "start" });
}
