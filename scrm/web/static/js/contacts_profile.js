// A contact's profile for marketers: every linked channel identity, subscription state, tags, typed
// attributes, merge (suggested or searched), and the timeline (conversations, tickets, broadcasts, changes).
import { api, get, qs } from "./api.js";
import { debounce, h, replace, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { mergeControl, suggestionsPanel } from "./contacts_merge.js";
import { attrValueText, attributeDefinitions, busy, errorLine, frame, label, splitList, statusChip } from "./marketing.js";
import { toast } from "./toast.js";

/** `reload()` shows the profile again (after a merge). */
export async function profile(id, reload) {
  const [c, defs, timeline] = await Promise.all([get(`/contacts/${id}`), attributeDefinitions(), get(`/contacts/${id}/timeline`)]);
  if (c.merged_into_id) {
    return { el: frame("contacts", c.name || t("contact.anonymous"), null,
      h("p.notice", { "data-testid": "merged-notice" }, t("mk.profile.merged"), " ",
        h("a", { href: `/contacts/${c.merged_into_id}`, "data-link": "", text: `#${c.merged_into_id}` }))) };
  }
  const title = c.name || c.email || c.phone || t("contact.anonymous");
  const suggestions = await suggestionsPanel(reload, id);
  return {
    el: frame("contacts", title, h("a.button", { href: "/contacts", "data-link": "", text: t("mk.back") }),
      h("div.profile-grid", {},
        h("div.profile-main", {},
          summary(c), identities(c), tagsCard(c), attributesCard(c, defs)),
        h("div.profile-side", {}, suggestions, manualMerge(c, reload), timelineCard(timeline)))),
  };
}

function summary(c) {
  const row = (k, v) => h("tr", {}, h("th", { text: k }), h("td", { text: v || "—" }));
  return h("section.mk-card", { "data-testid": "profile-summary" },
    h("h3", { "data-testid": "profile-name", text: c.name || t("contact.anonymous") }),
    h("table.attrs", {}, row(t("contact.email"), c.email), row(t("contact.phone"), c.phone), row(t("mk.field.language"), c.language),
      row(t("mk.field.first_seen"), fmtTime(c.first_seen_at, { full: true })), row(t("mk.field.last_seen"), fmtTime(c.last_seen_at, { full: true }))));
}

function identities(c) {
  const optOuts = Object.entries(c.opt_outs || {}).filter(([k, v]) => k.startsWith("broadcast:") && v === true).map(([k]) => k.slice(10));
  const rows = (c.identities || []).map((i) => h("tr", { "data-testid": "identity-row", dataset: { channel: i.channel_type || "" } },
    h("td", {}, channelIcon(i.channel_type), " ", h("span", { text: i.inbox_name || label("mk.channel", i.channel_type) })),
    h("td", {}, h("code", { text: i.username || i.external_id })),
    h("td", {},
      i.reachable ? h("span.chip.ok", { text: t("mk.profile.reachable") }) : h("span.chip.bad", { text: t("contact.unreachable") + (i.unreachable_reason ? ": " + i.unreachable_reason : "") }),
      " ", i.subscribed && !optOuts.includes(i.channel_type) ? h("span.chip.ok", { text: t("mk.profile.subscribed") }) : h("span.chip.bad", { "data-testid": "identity-optout", text: t("contact.unsubscribed") })),
    h("td.muted", { text: i.last_inbound_at ? t("mk.profile.last_inbound", { time: fmtTime(i.last_inbound_at) }) : t("mk.profile.never_wrote") })));
  return h("section.mk-card", { "data-testid": "profile-identities" },
    h("h3", { text: t("contact.identities") }),
    rows.length ? h("table.grid", {}, rows) : h("p.muted", { text: t("mk.profile.no_identities") }),
    optOuts.length ? h("p", { "data-testid": "profile-optouts", text: t("mk.profile.opted_out", { channels: optOuts.map((x) => label("mk.channel", x)).join(", ") }) }) : null);
}

function tagsCard(c) {
  const input = h("input", { value: (c.tags || []).join(", "), "data-testid": "profile-tags", "aria-label": t("contact.tags") });
  const error = errorLine("tags-error");
  const save = h("button", { "data-testid": "profile-tags-save", text: t("mk.save") });
  save.addEventListener("click", () => busy(save, async () => {
    error.hide();
    const res = await api("PUT", `/contacts/${c.id}/tags`, { tags: splitList(input.value) });
    input.value = res.tags.join(", ");
    toast(t("mk.saved"), "ok", 2000);
  }, (err) => error.show(err)));
  return h("section.mk-card", {}, h("h3", { text: t("contact.tags") }), h("div.row", {}, input, save), error.el);
}

function attributesCard(c, defs) {
  const attrs = c.attributes || {};
  const error = errorLine("attributes-error");
  const controls = defs.map((d) => {
    const value = attrs[d.key];
    let el;
    if (d.type === "choice") el = select([["", "—"], ...d.choices.map((x) => [x, x])], value ?? "", { "aria-label": d.label });
    else el = h("input", { type: d.type === "number" ? "number" : d.type === "date" ? "date" : "text", step: d.type === "number" ? "any" : null,
      value: value ?? "", "aria-label": d.label });
    el.dataset.key = d.key;
    el.dataset.testid = "attr-" + d.key;
    el.dataset.before = value ?? "";
    return h("tr", {}, h("th", { text: d.label }), h("td", {}, el), h("td.muted", { text: label("mk.type", d.type) }));
  });
  const defined = new Set(defs.map((d) => d.key));
  const others = Object.entries(attrs).filter(([k]) => !defined.has(k))
    .map(([k, v]) => h("tr", {}, h("th", {}, h("code", { text: k })), h("td", { colspan: 2, text: attrValueText(v) })));
  const save = h("button.primary", { "data-testid": "attributes-save", text: t("mk.save") });
  const table = h("table.attrs", {}, controls, others);
  save.addEventListener("click", () => busy(save, async () => {
    error.hide();
    const changes = {};
    for (const el of table.querySelectorAll("[data-key]")) {
      if (el.value === el.dataset.before) continue;
      changes[el.dataset.key] = el.value === "" ? null : el.value;
    }
    if (!Object.keys(changes).length) return;
    await api("PUT", `/contacts/${c.id}/attributes`, { attributes: changes });
    for (const el of table.querySelectorAll("[data-key]")) el.dataset.before = el.value;
    toast(t("mk.saved"), "ok", 2000);
  }, (err) => error.show(err)));
  return h("section.mk-card", { "data-testid": "profile-attributes" }, h("h3", { text: t("contact.attributes") }),
    defs.length || others.length ? table : h("p.muted", { text: t("mk.profile.no_attributes") }),
    defs.length ? h("div.actions", {}, save) : null, error.el);
}

function manualMerge(c, reload) {
  const q = h("input", { type: "search", placeholder: t("mk.merge.search"), "data-testid": "merge-search" });
  const results = h("ul.suggestion-list", { "data-testid": "merge-results" });
  const search = debounce(async () => {
    const text = q.value.trim();
    if (!text) return replace(results);
    try {
      const res = await get("/contacts" + qs({ q: text, limit: 10 }));
      replace(results, res.items.filter((o) => o.id !== c.id).map((o) => h("li", { "data-testid": "merge-candidate" },
        h("a", { href: `/contacts/${o.id}`, "data-link": "", text: `#${o.id} ${o.name || t("contact.anonymous")}` }),
        h("span.muted", { text: " " + [o.email, o.phone].filter(Boolean).join(" · ") }), " ",
        mergeControl({ id: c.id, name: c.name }, { id: o.id, name: o.name }, reload))));
    } catch (err) {
      replace(results, h("li.error", { text: err.message }));
    }
  }, 250);
  q.addEventListener("input", search);
  return h("section.mk-card", {}, h("h3", { text: t("mk.merge.into_this") }), h("p.muted", { text: t("mk.merge.rule") }), q, results);
}

function timelineCard(tl) {
  const item = (i) => {
    let text;
    let link = null;
    if (i.type === "conversation") {
      text = t("mk.timeline.conversation", { id: i.id, status: label("status", i.status) });
      link = `/conversations/${i.id}`;
    } else if (i.type === "ticket") text = t("mk.timeline.ticket", { number: i.number, subject: i.subject || "", status: i.status });
    else if (i.type === "broadcast") {
      text = t("mk.timeline.broadcast", { name: i.name, channel: label("mk.channel", i.channel || "—") });
      link = `/broadcasts/${i.id}`;
    } else text = t("mk.timeline.change." + (i.action || "").replace("contact.", ""), { fields: Object.keys(i.data?.changes || {}).join(", ") || (i.data?.fields || []).join(", ") });
    return h("li", { "data-testid": "timeline-item", dataset: { type: i.type } },
      h("span.when", { text: fmtTime(i.at) }), " ",
      link ? h("a", { href: link, "data-link": "", text }) : h("span", { text }),
      i.type === "broadcast" ? [" ", statusChip(i.status, "timeline-status"), i.reason ? h("span.muted", { text: " " + label("mk.reason", i.reason) }) : null] : null,
      i.preview ? h("div.muted", { text: i.preview }) : null);
  };
  return h("section.mk-card", { "data-testid": "profile-timeline" }, h("h3", { text: t("mk.timeline.title") }),
    tl.items.length ? h("ul.timeline", {}, tl.items.map(item)) : h("p.muted", { text: t("mk.timeline.empty") }));
}
