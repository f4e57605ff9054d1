// Rendering of the chat: every visitor or agent text goes in as text (h() uses textContent), never as HTML.
import { h, safeUrl } from "../js/dom.js";

export function fmtClock(iso, lang) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit", hour12: false }).format(new Date(iso));
}

export function fmtBytes(n) {
  if (n >= 1048576) return (n / 1048576).toFixed(n >= 10485760 ? 0 : 1) + " MB";
  return Math.max(1, Math.round(n / 1024)) + " KB";
}

function attachment(a, t) {
  const url = safeUrl(a.url);
  if (!url) return null;
  if (a.kind === "image") {
    return h("a.att-image", { href: url, target: "_blank", rel: "noopener noreferrer", "aria-label": t("image", { name: a.filename || "" }) },
      h("img", { src: url, alt: a.filename || "", loading: "lazy", "data-testid": "chat-image" }));
  }
  return h("a.att-file", { href: url, download: a.filename || "file", rel: "noopener noreferrer", "data-testid": "chat-file",
    "aria-label": t("download", { name: a.filename || "" }) }, h("span", { text: a.filename || "file" }));
}

/** One message bubble. `onRetry(client_id)` for a failed send. */
export function messageEl(m, ctx) {
  const { t, lang } = ctx;
  const from = m.from || "visitor";
  const el = h("div.msg", { class: "from-" + from, "data-testid": m.greeting ? "chat-greeting" : "chat-msg", "data-from": from, "data-id": m.id || "",
    "data-client-id": m.client_id || "" });
  if (from === "agent" || from === "bot") {
    el.append(h("div.who", { text: from === "agent" ? (m.agent || t("agent")) : t("bot") }));
  }
  const bubble = h("div.bubble");
  if (m.text) bubble.append(h("div.text", { "data-testid": "chat-text", text: m.text }));
  for (const a of m.attachments || []) {
    const node = attachment(a, t);
    if (node) bubble.append(node);
  }
  el.append(bubble);
  const meta = h("div.meta", {}, h("time", { datetime: m.at || "", text: fmtClock(m.at, lang) }));
  if (from === "visitor") {
    const state = m.failed ? "failed" : !m.id ? "sending" : m.id <= (ctx.readUpto || 0) ? "read" : "sent";
    const status = h(state === "failed" ? "button.status" : "span.status", { class: state, "data-testid": "chat-status", text: t(state) });
    if (state === "failed") status.addEventListener("click", () => ctx.onRetry(m.client_id));
    meta.append(" · ", status);
  }
  el.append(meta);
  return el;
}

/** The bot's buttons under its latest message (a CSAT question shows rating buttons). */
export function choicesEl(m, ctx) {
  const { t } = ctx;
  const csat = (m.choices || []).every((c) => /^csat:\d+:[1-5]$/.test(c.payload));
  if (csat) {
    // 5..1 in the DOM, shown 1..5 (row-reverse): hovering a star lights it and the lower ones.
    const sorted = [...m.choices].sort((a, b) => Number(b.payload.slice(-1)) - Number(a.payload.slice(-1)));
    return h("div.csat", { role: "group", "aria-label": t("rate"), "data-testid": "chat-csat" },
      h("div.csat-title", { text: t("rate") }),
      h("div.stars", {}, sorted.map((c) => {
        const n = Number(c.payload.slice(-1));
        return h("button.star", { type: "button", "data-testid": "chat-star", "data-rating": n, title: c.label,
          "aria-label": t("stars", { n }), text: "★", on: { click: () => ctx.onChoice(c) } });
      })));
  }
  return h("div.choices", { role: "group", "data-testid": "chat-choices" },
    m.choices.map((c) => h("button.choice", { type: "button", "data-testid": "chat-choice", text: c.label,
      on: { click: () => ctx.onChoice(c) } })));
}

/** A small form: fields [{name, label, type, required}], submit label, onSubmit(values) -> Promise. */
export function formEl(title, fields, submitLabel, onSubmit, ctx, testid) {
  const error = h("p.form-error", { role: "alert", hidden: true, "data-testid": "chat-form-error" });
  const inputs = fields.map((f) => {
    const id = `f-${testid}-${f.name}`;
    const attrs = { id, name: f.name, required: f.required, autocomplete: { email: "email", name: "name", phone: "tel" }[f.name] || "off",
      "data-testid": `field-${f.name}` };
    const control = f.type === "textarea" ? h("textarea", { rows: 3, ...attrs })
      : h("input", { type: f.type === "tel" ? "tel" : f.type === "email" ? "email" : "text", ...attrs });
    if (f.value) control.value = f.value;
    return h("div.field", {}, h("label", { for: id }, f.label, f.required ? h("span.req", { text: " *", title: ctx.t("required") }) : null), control);
  });
  const button = h("button.primary", { type: "submit", text: submitLabel, "data-testid": `${testid}-submit` });
  const form = h("form.chat-form", { "data-testid": testid, novalidate: true }, h("h2", { text: title }), inputs, error, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const bad = [...form.elements].find((el) => el.willValidate && !el.checkValidity());
    if (bad) {
      error.textContent = bad.validationMessage;
      error.hidden = false;
      bad.focus();
      return;
    }
    error.hidden = true;
    button.disabled = true;
    try {
      await onSubmit(Object.fromEntries(new FormData(form)));
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
