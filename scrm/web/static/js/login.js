// The login page: session cookie + CSRF token from POST /auth/login.
import { post } from "./api.js";
import { h, select } from "./dom.js";
import { getLang, setLang, t } from "./i18n.js";
import { state } from "./state.js";

export function loginPage(onLoggedIn, expired) {
  const error = h("p.error", { role: "alert", "data-testid": "login-error", hidden: true });
  const login = h("input", { name: "login", autocomplete: "username", required: true, "data-testid": "login-name" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true,
    "data-testid": "login-password" });
  const button = h("button.primary", { type: "submit", "data-testid": "login-submit", text: t("login.submit") });
  const lang = select([["zh", "中文"], ["en", "English"]], getLang(), { "aria-label": "Language" });
  lang.addEventListener("change", () => setLang(lang.value));
  const form = h("form.login-card", { on: { submit } },
    h("div.login-head", {}, h("h1", { text: "scrm" }), lang),
    h("p.muted", { text: t("login.subtitle") }),
    expired ? h("p.notice", { "data-testid": "session-expired", text: t("login.expired") }) : null,
    h("label", {}, h("span", { text: t("login.name") }), login),
    h("label", {}, h("span", { text: t("login.password") }), password),
    error, button);

  async function submit(ev) {
    ev.preventDefault();
    error.hidden = true;
    button.disabled = true;
    try {
      const res = await post("/auth/login", { login: login.value.trim(), password: password.value }, { silent401: true });
      state.me = res.agent;
      state.csrf = res.csrf_token;
      await onLoggedIn(new URLSearchParams(location.search).get("next"));
    } catch (err) {
      error.textContent = err.status === 401 ? t("login.bad") : err.message;
      error.hidden = false;
      button.disabled = false;
    }
  }

  setTimeout(() => login.focus(), 0);
  return { name: "login", el: h("div.login-page", {}, form) };
}
