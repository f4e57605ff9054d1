// Shared pieces of the marketer's pages (contacts, segments, broadcasts): role check, labels, small widgets.
import { get } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { state } from "./state.js";

export const MARKETING_ROLES = ["admin", "marketer"];

/** The API allows these pages to admins and marketers; the UI hides them from everybody else. */
export function canMarket() {
  return MARKETING_ROLES.includes(state.me?.role);
}

export function forbidden() {
  return h("p.forbidden", { role: "alert", "data-testid": "forbidden", text: t("mk.forbidden") });
}

/**
 * A marketing page that routes its own sub-paths: `viewFor(path, reopen)` resolves to a view
 * ({el, destroy?}); agents get "forbidden", a failed load its message.
 */
export function routedPage(name, path, viewFor) {
  const el = h("div.mk-page");
  let current = null;

  function show(p) {
    current?.destroy?.();
    current = null;
    if (!canMarket()) {
      replace(el, forbidden());
      return;
    }
    replace(el, h("p.loading", { text: t("loading") }));
    viewFor(p, () => show(location.pathname)).then((v) => {
      current = v;
      replace(el, v.el);
    }).catch((err) => replace(el, h("p.forbidden", { role: "alert", text: err.message })));
  }
  show(path);
  return { name, el, route: show, destroy: () => current?.destroy?.() };
}

/** A page frame: title, optional actions on the right, then the body. */
export function frame(name, title, actions, ...body) {
  return h("div.marketing", { "data-page": name },
    h("div.mk-head", {}, h("h1", { text: title }), h("div.spacer"), actions), ...body);
}

/** A translation with a readable fallback for codes the dictionary does not know (new skip reasons...). */
export function label(prefix, code) {
  const key = `${prefix}.${code}`;
  const text = t(key);
  return text === key ? String(code) : text;
}

export function statusChip(status, testid = "status") {
  return h("span.chip.mk-status", { class: "st-" + status, "data-testid": testid, "data-status": status, text: label("mk.status", status) });
}

export function channelTag(type) {
  return h("span.mk-channel", {}, channelIcon(type), " ", h("span", { text: label("mk.channel", type) }));
}

export function fieldBox(text, control, cls = "") {
  return h("label.field", { class: cls || null }, h("span", { text }), control);
}

/** An error line that shows API messages (text only). */
export function errorLine(testid = "mk-error") {
  const el = h("p.error", { role: "alert", "data-testid": testid, hidden: true });
  return {
    el,
    show(err) {
      el.textContent = err?.message || String(err);
      el.hidden = false;
    },
    hide() {
      el.hidden = true;
    },
  };
}

/** Run an async action with its button disabled; errors go to `onError` (default: throw). */
export async function busy(button, fn, onError) {
  button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    if (onError) onError(err);
    else throw err;
  } finally {
    button.disabled = false;
  }
}

export async function attributeDefinitions() {
  return (await get("/attribute-definitions")).definitions;
}

/** Inboxes the marketer may broadcast through (active ones) and the channel types present. */
export async function loadInboxes() {
  const items = (await get("/inboxes")).items;
  return { items, channels: [...new Set(items.map((i) => i.channel_type))].sort() };
}

export const splitList = (text) => String(text ?? "").split(/[,，、]/).map((s) => s.trim()).filter(Boolean);

export function fmtNum(n) {
  return new Intl.NumberFormat().format(n ?? 0);
}

export function attrValueText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
