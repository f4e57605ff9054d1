// My preferences: the e-mail signature added under my e-mail replies, and how I am notified.
import { api, get } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";
import { checkbox, deskFrame, errorLine, textArea } from "./desk_common.js";
import { SHORTCUTS } from "./shortcuts.js";

export async function preferencesPage() {
  const prefs = await get("/me/preferences");
  const error = errorLine("prefs-error");
  const signature = textArea(prefs.signature, { rows: 5, maxlength: 2000, "data-testid": "pref-signature" });
  const sound = checkbox(prefs.notify.sound, { "data-testid": "pref-sound" });
  const save = h("button.primary", { "data-testid": "pref-save", text: t("admin.save"), on: { click: async () => {
    error.hide();
    try {
      await api("PUT", "/me/preferences", { signature: signature.value, notify: { ...prefs.notify, sound: sound.checked } });
      toast(t("admin.saved"), "ok", 2000);
    } catch (err) {
      error.show(err);
    }
  } } });
  const el = deskFrame("preferences", t("prefs.title"), null,
    h("div.card.desk-form", {},
      h("label.field.wide", {}, h("span", { text: t("prefs.signature") }), signature, h("small.muted", { text: t("prefs.signature_hint") })),
      h("label.field.check", {}, sound, h("span", { text: t("notif.sound") })),
      h("p.muted", { text: t("prefs.browser_hint") }),
      error.el, h("div.form-actions", {}, save)),
    h("div.card", {}, h("h3", { text: t("keys.title") }),
      h("table", {}, SHORTCUTS.map(([key, action]) => h("tr", {}, h("td", {}, h("kbd", { text: key })), h("td", { text: t("keys." + action) }))))));
  return { name: "preferences", el };
}
