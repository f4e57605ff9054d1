// Contacts: search by text, tag, saved segment; tags and attributes in the list; CSV import/export;
// merge suggestions. /contacts/{id} is the profile (contacts_profile.js).
import { get, post } from "./api.js";
import { debounce, h, replace, select } from "./dom.js";
import { fmtAgo, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { importPanel } from "./contacts_import.js";
import { suggestionsPanel } from "./contacts_merge.js";
import { attrValueText, attributeDefinitions, errorLine, fmtNum, frame, routedPage, splitList } from "./marketing.js";

export function contactsPage(path) {
  return routedPage("contacts", path, (p, reopen) => {
    const m = p.match(/^\/contacts\/(\d+)$/);
    return m ? import("./contacts_profile.js").then((mod) => mod.profile(Number(m[1]), reopen)) : list();
  });
}

async function list() {
  const [defs, segs] = await Promise.all([attributeDefinitions(), get("/segments").then((r) => r.segments)]);
  const q = h("input.search", { type: "search", placeholder: t("mk.contacts.search"), "data-testid": "contacts-search" });
  const tag = h("input", { placeholder: t("mk.contacts.tag_filter"), "data-testid": "contacts-tag" });
  const segment = select([["", t("mk.contacts.any_segment")], ...segs.map((s) => [s.id, s.name])], "", { "data-testid": "contacts-segment", "aria-label": t("nav.segments") });
  const total = h("span.muted", { "data-testid": "contacts-total" });
  const body = h("tbody");
  const more = h("button", { hidden: true, text: t("list.more"), "data-testid": "contacts-more" });
  const error = errorLine("contacts-error");
  let cursor = null;
  let seq = 0;
  const attrCols = defs.slice(0, 4); // a few typed attributes as columns; all of them are on the profile

  function rules() {
    const parts = [];
    const seg = segs.find((s) => String(s.id) === segment.value);
    if (seg) parts.push(seg.rules);
    const tags = splitList(tag.value);
    if (tags.length) parts.push({ field: "tag", operator: "has", value: tags.length > 1 ? tags : tags[0] });
    return { op: "and", rules: parts };
  }

  async function load(append = false) {
    const mine = ++seq;
    error.hide();
    try {
      const res = await post("/contact-search", { q: q.value.trim(), rules: rules(), cursor: append ? cursor : 0, limit: 50 });
      if (mine !== seq) return;
      cursor = res.next_cursor;
      more.hidden = !cursor;
      total.textContent = t("mk.contacts.total", { n: fmtNum(res.count) });
      const rows = res.items.map(row);
      if (append) body.append(...rows);
      else replace(body, rows.length ? rows : h("tr", {}, h("td.empty", { colspan: 6 + attrCols.length, text: t("mk.contacts.none") })));
    } catch (err) {
      if (mine === seq) error.show(err);
    }
  }

  function row(c) {
    return h("tr", { "data-testid": "contact-row", dataset: { id: String(c.id) } },
      h("td", {}, h("a", { href: `/contacts/${c.id}`, "data-link": "", "data-testid": "contact-link", text: c.name || t("contact.anonymous") })),
      h("td", { text: c.email || "" }), h("td", { text: c.phone || "" }),
      h("td.channels", {}, (c.channels || []).map((ch) => channelIcon(ch))),
      h("td", {}, (c.tags || []).map((x) => h("span.chip", { "data-testid": "contact-tag", text: x }))),
      attrCols.map((d) => h("td", { text: attrValueText(c.attributes?.[d.key]) })),
      h("td.muted", { text: fmtAgo(c.last_seen_at) }));
  }

  const reload = debounce(() => load(false), 250);
  q.addEventListener("input", reload);
  tag.addEventListener("input", reload);
  segment.addEventListener("change", () => load(false));
  more.addEventListener("click", () => load(true));

  const imp = importPanel(defs, () => load(false));
  const importBtn = h("button", { "data-testid": "import-open", text: t("mk.import.open"), on: { click: () => { imp.el.hidden = !imp.el.hidden; } } });
  const exportLink = h("a.button", { href: "/api/v1/contact-export", download: "contacts.csv", "data-testid": "export-csv", text: t("mk.contacts.export") });
  const suggestions = await suggestionsPanel(() => load(false));
  await load(false);
  return {
    el: frame("contacts", t("nav.contacts"), h("span.mk-actions", {}, importBtn, exportLink),
      imp.el,
      h("div.mk-filters", {}, q, tag, segment, total),
      error.el,
      h("table.grid.contacts", { "data-testid": "contacts-table" },
        h("thead", {}, h("tr", {}, [t("contact.name"), t("contact.email"), t("contact.phone"), t("mk.channels"), t("contact.tags"),
          ...attrCols.map((d) => d.label), t("mk.contacts.last_seen")].map((x) => h("th", { text: x })))), body),
      more, suggestions),
  };
}
