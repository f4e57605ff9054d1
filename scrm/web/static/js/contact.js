// The contact panel: profile, channel identities, tags, editable attributes, opt-outs, history, tickets.
import { get, patch } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { toast } from "./toast.js";

let definitions = null; // typed attribute definitions, loaded once per page: the keys an agent may set

export class ContactPanel {
  constructor(openConversation) {
    this.openConversation = openConversation;
    this.id = null;
    this.contact = null;
    this.el = h("aside.contact-pane", { "data-testid": "contact-panel" });
  }

  clear() {
    this.id = null;
    replace(this.el);
  }

  onContactUpdated(id) {
    if (id === this.id) this.load(id, true);
  }

  async load(id, force = false) {
    if (id === this.id && !force) return;
    this.id = id;
    try {
      const [contact, defs] = await Promise.all([get(`/contacts/${id}`),
        definitions ?? get("/attribute-definitions").then((d) => d.definitions).catch(() => [])]);
      definitions = defs;
      if (id !== this.id) return;
      this.contact = contact;
      this.render(force); // a realtime refresh of the same contact keeps what the agent is typing
    } catch (err) {
      if (id === this.id) replace(this.el, h("p.error", { role: "alert", text: err.message }));
    }
  }

  async save(changes) {
    try {
      this.contact = await patch(`/contacts/${this.id}`, changes);
      this.render();
    } catch (err) {
      toast(err.message);
      this.render(true); // refused: what the agent typed stays, to correct it
    }
  }

  field(name, label) {
    const input = h("input", { value: this.contact[name] || "", "data-testid": "contact-" + name, "aria-label": label });
    input.addEventListener("change", () => this.save({ [name]: input.value.trim() }));
    return h("label.field", {}, h("span", { text: label }), input);
  }

  // What the agent is typing and has not saved: the new attribute's key and value, and the focused field.
  drafts() {
    const values = {};
    for (const input of this.el.querySelectorAll("input[data-draft]")) values[input.dataset.draft] = input.value;
    const focused = this.el.contains(document.activeElement) && document.activeElement.tagName === "INPUT"
      ? document.activeElement : null;
    return { values, focused: focused && { key: focused.dataset.testid || focused.getAttribute("aria-label"),
      value: focused.value, start: focused.selectionStart, end: focused.selectionEnd } };
  }

  restore({ values, focused }) {
    for (const input of this.el.querySelectorAll("input[data-draft]")) input.value = values[input.dataset.draft] ?? "";
    if (!focused || !focused.key) return;
    const sel = `input[data-testid="${CSS.escape(focused.key)}"], input[aria-label="${CSS.escape(focused.key)}"]`;
    const input = this.el.querySelector(sel);
    if (!input) return;
    input.value = focused.value;
    input.focus();
    try { input.setSelectionRange(focused.start, focused.end); } catch { /* not a text input */ }
  }

  render(keepDrafts = false) {
    const drafts = keepDrafts ? this.drafts() : null;
    const c = this.contact;
    const initials = (c.name || c.email || "?").trim().slice(0, 1).toUpperCase();
    const avatar = c.avatar_url && c.avatar_url.startsWith("/files/")
      ? h("img.avatar", { src: c.avatar_url, alt: "" }) : h("div.avatar", { text: initials });
    const tags = h("input", { value: (c.tags || []).join(", "), "data-testid": "contact-tags", "aria-label": t("contact.tags") });
    tags.addEventListener("change", () => this.save({ tags: tags.value.split(/[,，]/).map((s) => s.trim()).filter(Boolean) }));

    const attrRows = Object.entries(c.attributes || {}).map(([key, value]) => {
      const input = h("input", { value: typeof value === "string" ? value : JSON.stringify(value), "aria-label": key });
      input.addEventListener("change", () => this.save({ attributes: { [key]: input.value } }));
      return h("tr", {}, h("th", { text: key }), h("td", {}, input),
        h("td", {}, h("button.link", { "aria-label": t("contact.remove_attr"), text: "×",
          on: { click: () => this.save({ attributes: { [key]: null } }) } })));
    });
    // Only defined attributes can be set (the server validates them by type); the list offers their keys.
    const keyList = h("datalist", { id: "attr-keys" }, (definitions || []).map((d) => h("option", { value: d.key, label: d.label || d.key })));
    const newKey = h("input", { placeholder: t("contact.attr_key"), "data-testid": "attr-key", "data-draft": "key", list: "attr-keys" });
    const newValue = h("input", { placeholder: t("contact.attr_value"), "data-testid": "attr-value", "data-draft": "value" });
    const addAttr = h("button", { text: t("contact.add"), "data-testid": "attr-add", on: { click: () => {
      const key = newKey.value.trim();
      if (key) this.save({ attributes: { [key]: newValue.value } });
    } } });

    const optOuts = Object.entries(c.opt_outs || {});
    replace(this.el,
      h("div.contact-head", {}, avatar, h("div", {}, h("h3", { "data-testid": "contact-name", text: c.name || t("contact.anonymous") }),
        h("div.muted", { text: t("contact.first_seen", { time: fmtTime(c.first_seen_at) }) }))),
      this.field("name", t("contact.name")), this.field("email", t("contact.email")), this.field("phone", t("contact.phone")),
      h("h4", { text: t("contact.identities") }),
      h("ul.identities", {}, (c.identities || []).map((i) => h("li", {},
        channelIcon(i.channel_type), " ", h("span", { text: i.inbox_name || "" }), " ",
        h("code", { text: i.username || i.external_id }),
        !i.reachable ? h("span.chip.bad", { text: t("contact.unreachable") + (i.unreachable_reason ? ": " + i.unreachable_reason : "") }) : null,
        !i.subscribed ? h("span.chip.bad", { text: t("contact.unsubscribed") }) : null))),
      h("h4", { text: t("contact.subscription") }),
      optOuts.length
        ? h("ul", { "data-testid": "opt-outs" }, optOuts.map(([k, v]) => h("li", { text: `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}` })))
        : h("p.muted", { "data-testid": "opt-outs", text: t("contact.subscribed_all") }),
      h("h4", { text: t("contact.tags") }), tags,
      h("h4", { text: t("contact.attributes") }),
      h("table.attrs", {}, attrRows, h("tr", {}, h("td", {}, newKey, keyList), h("td", {}, newValue), h("td", {}, addAttr))),
      h("h4", { text: t("contact.conversations") }),
      h("ul.history", {}, (c.conversations || []).map((conv) => h("li", {},
        h("a", { href: "/conversations/" + conv.id, "data-link": "" }, channelIcon(conv.channel_type), " ",
          h("span", { text: `#${conv.id} ${t("status." + conv.status)} · ${fmtTime(conv.last_activity_at)}` })),
        h("div.muted", { text: conv.last_message_preview || "" })))),
      h("h4", { text: t("contact.tickets") }),
      (c.tickets || []).length
        ? h("ul.tickets", {}, c.tickets.map((tk) => h("li", { text: `#${tk.number} ${tk.subject} · ${tk.status}` })))
        : h("p.muted", { text: t("contact.no_tickets") }));
    if (drafts) this.restore(drafts);
  }
}
