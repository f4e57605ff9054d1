// Merging contacts: the server's suggestions (shared verified email or phone) and a two-step confirm that
// states the conflict rule before anything moves. Names are customer text: textContent only.
import { get, post } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { busy, errorLine } from "./marketing.js";
import { toast } from "./toast.js";

const who = (c) => `#${c.id} ${c.name || t("contact.anonymous")}`;

/** A "Merge" button that turns into a confirmation box (keep target, merge source into it). */
export function mergeControl(target, source, onMerged) {
  const box = h("span.merge-control");
  const start = h("button", { "data-testid": "merge-start", text: t("mk.merge.merge"), on: { click: confirmStep } });
  const error = errorLine("merge-error");

  function confirmStep() {
    const swap = h("button.link", { "data-testid": "merge-swap", text: t("mk.merge.swap", { id: source.id }), on: { click: () => {
      [target, source] = [source, target]; // the survivor's values win, so which one survives matters
      confirmStep();
    } } });
    const yes = h("button.primary", { "data-testid": "merge-confirm", text: t("mk.merge.confirm") });
    const no = h("button", { text: t("mk.cancel"), on: { click: () => replace(box, start) } });
    yes.addEventListener("click", () => busy(yes, async () => {
      const res = await post("/contact-merges", { target_id: target.id, source_id: source.id });
      const conflicts = Object.keys(res.conflicts || {}).length;
      toast(t("mk.merge.done", { source: who(source), target: who(target), n: conflicts }), "ok", 5000);
      onMerged(res);
    }, (err) => error.show(err)));
    replace(box, h("div.merge-confirm", { "data-testid": "merge-box" },
      h("p", { text: t("mk.merge.question", { source: who(source), target: who(target) }) }),
      h("p.muted", { text: t("mk.merge.rule") }), yes, " ", no, " ", swap, error.el));
  }
  replace(box, start);
  return box;
}

/** The list of suggested merges (all of them, or those involving `contactId`). */
export async function suggestionsPanel(onMerged, contactId = null) {
  const el = h("section.mk-card.suggestions", { "data-testid": "merge-suggestions" });
  async function load() {
    let items = [];
    try {
      items = (await get("/contact-merges/suggestions")).suggestions;
    } catch (err) {
      replace(el, h("p.error", { text: err.message }));
      return;
    }
    if (contactId) items = items.filter((s) => s.target.id === contactId || s.source.id === contactId);
    replace(el, h("h3", { text: t("mk.merge.suggestions") }),
      items.length ? h("ul.suggestion-list", {}, items.map((s) => h("li", { "data-testid": "merge-suggestion" },
        h("a", { href: `/contacts/${s.target.id}`, "data-link": "", text: who(s.target) }), " ⇐ ",
        h("a", { href: `/contacts/${s.source.id}`, "data-link": "", text: who(s.source) }), " ",
        h("span.chip", { text: `${s.reason === "same email" ? t("mk.merge.same_email") : t("mk.merge.same_phone")}: ${s.value}` }), " ",
        mergeControl(s.target, s.source, (res) => {
          load();
          onMerged(res);
        }))))
        : h("p.muted", { text: t("mk.merge.none") }));
  }
  await load();
  return el;
}
