// My preferences: the e-mail signature added under my e-mail replies, and how I am notified.
import { api, get, post } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";
import { checkbox, deskFrame, errorLine, textArea } from "./desk_common.js";
import { SHORTCUTS } from "./shortcuts.js";
import { state } from "./state.js";

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
    securityCard(),
    h("div.card", {}, h("h3", { text: t("keys.title") }),
      h("table", {}, SHORTCUTS.map(([key, action]) => h("tr", {}, h("td", {}, h("kbd", { text: key })), h("td", { text: t("keys." + action) }))))));
  return { name: "preferences", el };
}

// Password change (the server ends my other sessions and gives this one a new cookie) and "sign out everywhere".
function securityCard() {
  const error = errorLine("pw-error");
  const current = h("input", { type: "password", autocomplete: "current-password", "data-testid": "pw-current" });
  const fresh = h("input", { type: "password", autocomplete: "new-password", minlength: 8, "data-testid": "pw-new" });
  const change = h("button.primary", { "data-testid": "pw-change", text: t("prefs.pw_change"), on: { click: async () => {
    error.hide();
    try {
      const res = await post("/me/password", { current_password: current.value, new_password: fresh.value });
      state.csrf = res.csrf_token; // the session was rotated: the old CSRF token went with it
      current.value = fresh.value = "";
      toast(t("prefs.pw_changed"), "ok", 4000);
    } catch (err) {
      error.show(err);
    }
  } } });
  const everywhere = h("button", { "data-testid": "signout-everywhere", text: t("prefs.signout_all"), on: { click: async () => {
    error.hide();
    try {
      await post("/auth/logout-all");
      state.me = null;
      state.csrf = null;
      location.assign("/login");
    } catch (err) {
      error.show(err);
    }
  } } });
  return h("div.card.desk-form", { "data-testid": "prefs-security" }, h("h3", { text: t("prefs.security") }),
    h("label.field", {}, h("span", { text: t("prefs.pw_current") }), current),
    h("label.field", {}, h("span", { text: t("prefs.pw_new") }), fresh, h("small.muted", { text: t("prefs.pw_hint") })),
    error.el, h("div.form-actions", {}, change),
    h("p.muted", { text: t("prefs.signout_all_hint") }), h("div.form-actions", {}, everywhere));
}
