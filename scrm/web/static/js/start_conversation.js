// Agent-started conversations: write to a contact first on a channel that allows it (e-mail; Telegram
// to a chat that already wrote to the bot; WeChat inside its 48-hour window). The server says why not.
import { get, post, qs } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { navigate } from "./router.js";
import { selectOf } from "./desk_common.js";

const STARTABLE = ["email", "telegram", "wechat_oa", "api", "memory"];

export function startConversationButton() {
  return h("button.link.start-conv", { type: "button", "data-testid": "start-conversation", text: t("start.button"),
    on: { click: openDialog } });
}

async function openDialog() {
  let contact = null;
  const error = h("p.error", { role: "alert", "data-testid": "start-error", hidden: true });
  const search = h("input", { type: "search", placeholder: t("tickets.find_contact"), "data-testid": "start-contact-search" });
  const results = h("ul.pick-list", {});
  const chosen = h("p.muted", { "data-testid": "start-contact", text: t("tickets.no_contact") });
  const inbox = selectOf([], "", { "data-testid": "start-inbox" });
  const subject = h("input", { maxlength: 500, "data-testid": "start-subject" });
  const subjectField = h("label.field.wide", { hidden: true }, h("span", { text: t("start.subject") }), subject);
  const text = h("textarea", { rows: 5, required: true, "data-testid": "start-text" });
  try {
    const items = (await get("/inboxes")).items.filter((i) => i.active && STARTABLE.includes(i.channel_type));
    replace(inbox, items.map((i) => h("option", { value: i.id, "data-channel": i.channel_type, text: `${i.name} (${i.channel_type})` })));
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
  const syncSubject = () => (subjectField.hidden = inbox.selectedOptions[0]?.dataset.channel !== "email");
  inbox.addEventListener("change", syncSubject);
  syncSubject();
  search.addEventListener("input", debounce(async () => {
    const q = search.value.trim();
    if (!q) return replace(results);
    const data = await get("/contacts" + qs({ q, limit: 8 }));
    replace(results, data.items.map((c) => h("li", { tabindex: 0, "data-testid": "start-contact-option", on: { click: () => {
      contact = c;
      chosen.textContent = t("tickets.contact_chosen", { name: c.name || c.email || c.phone || "#" + c.id });
      replace(results);
    } } }, h("strong", { text: c.name || t("contact.anonymous") }), " ", h("span.muted", { text: [c.email, c.phone].filter(Boolean).join(" · ") }))));
  }, 250));
  const submit = h("button.primary", { type: "submit", "data-testid": "start-submit", text: t("start.send") });
  const dialog = h("div.modal", { role: "dialog", "aria-label": t("start.title"), "data-testid": "start-dialog" });
  const close = () => dialog.remove();
  const form = h("form.modal-card.desk-form", { on: { submit: async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    if (!contact) {
      error.textContent = t("tickets.pick_contact");
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      const res = await post("/conversations", { contact_id: contact.id, inbox_id: Number(inbox.value), text: text.value,
        subject: subject.value.trim() || null });
      close();
      navigate("/conversations/" + res.conversation_id);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  } } },
  h("h2", { text: t("start.title") }), h("p.muted", { text: t("start.hint") }),
  h("label.field.wide", {}, h("span", { text: t("tickets.customer") }), search), results, chosen,
  h("label.field.wide", {}, h("span", { text: t("start.inbox") }), inbox), subjectField,
  h("label.field.wide", {}, h("span", { text: t("start.message") }), text), error,
  h("div.form-actions", {}, submit, h("button", { type: "button", text: t("desk.cancel"), on: { click: close } })));
  dialog.append(form);
  dialog.addEventListener("keydown", (ev) => ev.key === "Escape" && close());
  document.body.append(dialog);
  search.focus();
}
