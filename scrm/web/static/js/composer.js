// The reply box: reply or private note, canned responses by "/shortcut" with {{variables}}, "@name" to mention
// a colleague in a note, attachments,
// a draft per conversation that survives reloads and expired sessions, and the closed-reply-window notice.
import { api, get, post } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { state } from "./state.js";
import { toast } from "./toast.js";
import { live } from "./ws.js";

const DRAFT = (id) => `scrm.draft.${id}`;
let cannedCache = null; // loaded once per page; small

export function fillVariables(text, conv) {
  const contact = conv?.contact || {};
  const values = { name: contact.name || "", email: contact.email || "", phone: contact.phone || "",
    agent: state.me?.display_name || "" };
  return text.replace(/\{\{\s*(\w+)\s*\}\}/g, (m, key) => (key in values ? values[key] : m));
}

export class Composer {
  constructor(thread) {
    this.thread = thread;
    this.conv = null;
    this.mode = "reply";
    this.attachments = [];
    this.sending = false;
    this.lastTyping = 0;
    this.suggestions = [];
    this.active = 0;
    this.input = h("textarea", { rows: 3, "data-testid": "composer-input", placeholder: t("composer.placeholder") });
    this.input.addEventListener("input", () => this.onInput());
    this.input.addEventListener("keydown", (ev) => this.onKey(ev));
    this.replyBtn = h("button.mode", { "data-testid": "mode-reply", text: t("composer.reply"), on: { click: () => this.setMode("reply") } });
    this.noteBtn = h("button.mode", { "data-testid": "mode-note", text: t("composer.note"), on: { click: () => this.setMode("note") } });
    this.file = h("input", { type: "file", hidden: true, multiple: true });
    this.file.addEventListener("change", () => this.upload());
    this.attachBtn = h("button.link", { "data-testid": "attach", text: t("composer.attach"), on: { click: () => this.file.click() } });
    this.sendBtn = h("button.primary", { "data-testid": "send", text: t("composer.send"), on: { click: () => this.send() } });
    this.chips = h("div.attachments");
    this.menu = h("ul.canned-menu", { "data-testid": "canned-menu", hidden: true, role: "listbox" });
    this.windowNote = h("div.window-closed", { "data-testid": "reply-window-closed", role: "status", hidden: true });
    this.el = h("div.composer", {}, this.windowNote,
      h("div.modes", {}, this.replyBtn, this.noteBtn, h("span.hint", { text: t("composer.hint") })),
      h("div.input-wrap", {}, this.menu, this.input), this.chips,
      h("div.composer-actions", {}, this.attachBtn, this.file, this.sendBtn));
  }

  /** A different conversation: load its draft. */
  bind(conv) {
    this.conv = conv;
    this.attachments = [];
    this.renderChips();
    this.input.value = localStorage.getItem(DRAFT(conv.id)) || "";
    this.setConversation(conv);
    this.hideMenu();
  }

  setConversation(conv) {
    this.conv = conv;
    const window = conv.reply_window || { open: true };
    this.windowOpen = window.open;
    this.windowNote.hidden = window.open;
    this.windowNote.textContent = window.open ? "" : t("composer.window_closed", { reason: window.reason || "" });
    this.replyBtn.disabled = !window.open;
    if (!window.open && this.mode === "reply") this.setMode("note");
    else this.setMode(this.mode);
  }

  setMode(mode) {
    if (mode === "reply" && this.windowOpen === false) mode = "note";
    this.mode = mode;
    this.replyBtn.classList.toggle("active", mode === "reply");
    this.noteBtn.classList.toggle("active", mode === "note");
    this.el.classList.toggle("note-mode", mode === "note");
    this.attachBtn.hidden = mode === "note";
    this.input.placeholder = t(mode === "note" ? "composer.note_placeholder" : "composer.placeholder");
    this.sendBtn.textContent = t(mode === "note" ? "composer.add_note" : "composer.send");
  }

  saveDraft() {
    if (!this.conv) return;
    const key = DRAFT(this.conv.id);
    if (this.input.value) localStorage.setItem(key, this.input.value);
    else localStorage.removeItem(key);
  }

  onInput() {
    this.saveDraft();
    const now = Date.now();
    if (this.conv && now - this.lastTyping > 2000 && this.input.value) {
      this.lastTyping = now;
      live.send({ type: "typing", conversation_id: this.conv.id, private: this.mode === "note" });
    }
    this.suggest();
  }

  /** What the word before the caret asks for: "/shortcut" a canned response, "@name" (notes only) a colleague. */
  async suggest() {
    const head = this.input.value.slice(0, this.input.selectionStart);
    const mention = this.mode === "note" ? /(^|\s)@([^\s@]*)$/.exec(head) : null;
    if (mention) return this.suggestAgents(mention[2]);
    const m = /(^|\s)\/(\S*)$/.exec(head);
    if (!m) return this.hideMenu();
    if (cannedCache === null) {
      try {
        cannedCache = (await get("/canned_responses?limit=200")).items;
      } catch (err) {
        cannedCache = [];
        toast(err.message);
      }
    }
    const q = m[2].toLowerCase();
    this.suggestions = cannedCache.filter((c) => c.shortcut.toLowerCase().includes(q) || c.title.toLowerCase().includes(q))
      .slice(0, 8).map((c) => ({ kind: "canned", canned: c }));
    this.active = 0;
    this.renderMenu();
  }

  /** Active colleagues whose name or login contains what follows "@" (the server matches names the same way). */
  suggestAgents(q) {
    const needle = q.toLowerCase();
    this.suggestions = [...state.agents.values()]
      .filter((a) => a.active && a.id !== state.me?.id)
      .filter((a) => (a.display_name || "").toLowerCase().includes(needle) || (a.login || "").toLowerCase().includes(needle))
      .slice(0, 8).map((a) => ({ kind: "agent", agent: a }));
    this.active = 0;
    this.renderMenu();
  }

  renderMenu() {
    if (!this.suggestions.length) return this.hideMenu();
    replace(this.menu, this.suggestions.map((s, i) => h("li", { role: "option",
      "data-testid": s.kind === "agent" ? "mention-option" : "canned-option",
      class: i === this.active ? "active" : "", on: { mousedown: (ev) => { ev.preventDefault(); this.pick(s); } } },
      ...(s.kind === "agent"
        ? [h("strong", { text: "@" + (s.agent.display_name || s.agent.login) }), " ", h("span.muted", { text: s.agent.login || "" })]
        : [h("strong", { text: "/" + s.canned.shortcut }), " ", h("span", { text: s.canned.title }),
          h("div.muted", { text: fillVariables(s.canned.text, this.conv).slice(0, 120) })]))));
    this.menu.hidden = false;
  }

  hideMenu() {
    this.suggestions = [];
    this.menu.hidden = true;
  }

  pick(choice) {
    const pos = this.input.selectionStart;
    let before;
    let filled;
    if (choice.kind === "agent") {
      before = this.input.value.slice(0, pos).replace(/@[^\s@]*$/, "");
      filled = "@" + (choice.agent.display_name || choice.agent.login) + " ";
    } else {
      before = this.input.value.slice(0, pos).replace(/\/\S*$/, "");
      filled = fillVariables(choice.canned.text, this.conv);
    }
    this.input.value = before + filled + this.input.value.slice(pos);
    this.input.selectionStart = this.input.selectionEnd = (before + filled).length;
    this.hideMenu();
    this.saveDraft();
    this.input.focus();
  }

  onKey(ev) {
    if (!this.menu.hidden && this.suggestions.length) {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        this.active = (this.active + (ev.key === "ArrowDown" ? 1 : -1) + this.suggestions.length) % this.suggestions.length;
        this.renderMenu();
        return;
      }
      if (ev.key === "Enter" || ev.key === "Tab") {
        ev.preventDefault();
        this.pick(this.suggestions[this.active]);
        return;
      }
      if (ev.key === "Escape") return this.hideMenu();
    }
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault(); // Enter sends, Shift+Enter is a new line (IME composition is left alone)
      this.send();
    }
  }

  async upload() {
    for (const file of this.file.files) {
      const form = new FormData();
      form.append("file", file, file.name);
      try {
        this.attachments.push(await api("POST", "/uploads", form));
      } catch (err) {
        toast(`${file.name}: ${err.message}`);
      }
    }
    this.file.value = "";
    this.renderChips();
  }

  renderChips() {
    replace(this.chips, this.attachments.map((a, i) => h("span.chip.attachment-chip", {},
      "📎 ", a.filename, h("button.link", { "aria-label": t("composer.remove"), text: "×",
        on: { click: () => { this.attachments.splice(i, 1); this.renderChips(); } } }))));
  }

  async send() {
    if (!this.conv || this.sending) return;
    const text = this.input.value.trim();
    const note = this.mode === "note";
    if (!text && (note || !this.attachments.length)) return;
    const id = this.conv.id;
    this.sending = true;
    this.sendBtn.disabled = true;
    try {
      const body = note ? { text, private: true } : { text: text || null, attachments: this.attachments };
      const message = await post(`/conversations/${id}/messages`, body);
      localStorage.removeItem(DRAFT(id));
      if (this.conv?.id === id) {
        this.input.value = "";
        this.attachments = [];
        this.renderChips();
      }
      this.thread.upsertMessage(message);
      if (!note) this.thread.refreshMetaSoon(); // replying takes the conversation from the bot
    } catch (err) {
      toast(err.message); // the text stays in the box and in the saved draft
    } finally {
      this.sending = false;
      this.sendBtn.disabled = false;
    }
  }
}
