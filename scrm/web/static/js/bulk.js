// Bulk actions on the conversation list: tick rows, then assign, label, resolve or snooze them at once.
import { post } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { state } from "./state.js";
import { toast } from "./toast.js";
import { agentOptions, selectOf } from "./desk_common.js";

const SNOOZE = [["1", "snooze.1h"], ["4", "snooze.4h"], ["24", "snooze.24h"], ["168", "snooze.week"]];

export class BulkSelection {
  constructor(onDone) {
    this.onDone = onDone;
    this.ids = new Set();
    this.visible = [];
    this.bar = h("div.bulk-bar", { "data-testid": "bulk-bar", hidden: true });
  }

  /** The row's checkbox (clicking it never opens the conversation). */
  checkbox(id) {
    const box = h("input.bulk-check", { type: "checkbox", checked: this.ids.has(id), "data-testid": "bulk-check",
      "aria-label": t("bulk.select") });
    box.addEventListener("click", (ev) => ev.stopPropagation());
    box.addEventListener("keydown", (ev) => ev.stopPropagation());
    box.addEventListener("change", () => {
      if (box.checked) this.ids.add(id);
      else this.ids.delete(id);
      this.render();
    });
    return box;
  }

  /** The list was redrawn with these conversations: forget ticks on rows that left it. */
  shown(ids) {
    const before = `${this.ids.size}/${this.visible.length}`;
    this.visible = ids;
    for (const id of [...this.ids]) if (!ids.includes(id)) this.ids.delete(id);
    if (`${this.ids.size}/${this.visible.length}` !== before) this.render(); // a live update must not wipe a typed label
  }

  clear() {
    this.ids.clear();
    for (const box of document.querySelectorAll(".bulk-check")) box.checked = false;
    this.render();
  }

  async run(body, button) {
    if (button) button.disabled = true;
    try {
      const res = await post("/conversations/bulk", { ids: [...this.ids], ...body });
      if (res.failed.length) toast(t("bulk.some_failed", { n: res.failed.length, error: res.failed[0].error }));
      else toast(t("bulk.done", { n: res.done.length }), "ok", 2500);
      this.clear();
      this.onDone();
    } catch (err) {
      toast(err.message);
    } finally {
      if (button) button.disabled = false;
    }
  }

  render() {
    if (!this.ids.size) {
      this.bar.hidden = true;
      return;
    }
    const assign = selectOf([["", t("bulk.assign")], ["me", t("tickets.assignee_me")], ["none", t("list.unassigned")], ...agentOptions()], "",
      { "data-testid": "bulk-assign", "aria-label": t("bulk.assign") });
    assign.addEventListener("change", () => {
      if (!assign.value) return;
      const id = assign.value === "me" ? state.me.id : assign.value === "none" ? null : Number(assign.value);
      this.run({ action: "assign", assignee_id: id });
    });
    const label = h("input.bulk-label", { placeholder: t("bulk.label"), "data-testid": "bulk-label", "aria-label": t("bulk.label") });
    const addLabel = h("button", { "data-testid": "bulk-label-add", text: t("bulk.add_label"), on: { click: () => {
      if (label.value.trim()) this.run({ action: "label", label: label.value.trim() }, addLabel);
    } } });
    const resolve = h("button", { "data-testid": "bulk-resolve", text: t("thread.resolve"),
      on: { click: () => this.run({ action: "resolve" }, resolve) } });
    const snooze = selectOf([["", t("snooze.choose")], ...SNOOZE.map(([v, k]) => [v, t(k)])], "", { "data-testid": "bulk-snooze",
      "aria-label": t("thread.snooze") });
    snooze.addEventListener("change", () => {
      if (!snooze.value) return;
      this.run({ action: "snooze", snoozed_until: new Date(Date.now() + Number(snooze.value) * 3600e3).toISOString() });
    });
    const all = h("button.link", { "data-testid": "bulk-all", text: t("bulk.all", { n: this.visible.length }), on: { click: () => {
      for (const id of this.visible) this.ids.add(id);
      for (const box of document.querySelectorAll(".bulk-check")) box.checked = true;
      this.render();
    } } });
    replace(this.bar, h("strong", { "data-testid": "bulk-count", text: t("bulk.selected", { n: this.ids.size }) }), all,
      h("button.link", { text: t("bulk.clear"), on: { click: () => this.clear() } }),
      h("div.bulk-actions", {}, assign, label, addLabel, resolve, snooze));
    this.bar.hidden = false;
  }
}
