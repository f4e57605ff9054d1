// Segments: saved rules with a live member count (list), and the rule builder with a live preview (editor).
import { api, del, get, post } from "./api.js";
import { debounce, h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { navigate } from "./router.js";
import { attributeDefinitions, busy, errorLine, fieldBox, fmtNum, frame, loadInboxes, routedPage } from "./marketing.js";
import { RuleBuilder } from "./segments_builder.js";
import { toast } from "./toast.js";

export function segmentsPage(path) {
  return routedPage("segments", path, (p) => {
    const m = p.match(/^\/segments\/(new|\d+)$/);
    return m ? editor(m[1] === "new" ? null : Number(m[1])) : list();
  });
}

async function list() {
  const { segments } = await get("/segments");
  const rows = segments.map((sg) => {
    const count = h("td.num", { "data-testid": "segment-row-count", text: "…" });
    get(`/segments/${sg.id}`).then((live) => {
      count.textContent = live.error ? "⚠" : fmtNum(live.count);
      if (live.error) count.title = live.error;
    }).catch(() => { count.textContent = "?"; });
    const remove = h("button.danger", { text: t("mk.delete"), on: { click: async () => {
      if (!confirm(t("mk.segments.confirm_delete", { name: sg.name }))) return;
      try {
        await del(`/segments/${sg.id}`);
        row.remove();
      } catch (err) {
        toast(err.message);
      }
    } } });
    const row = h("tr", { "data-testid": "segment-row" },
      h("td", {}, h("a", { href: `/segments/${sg.id}`, "data-link": "", text: sg.name })), count,
      h("td.muted", { text: fmtTime(sg.updated_at || sg.created_at) }),
      h("td", {}, h("a.button", { href: `/broadcasts/new?segment=${sg.id}`, "data-link": "", text: t("mk.segments.broadcast") }), " ", remove));
    return row;
  });
  const newBtn = h("a.button.primary", { href: "/segments/new", "data-link": "", "data-testid": "segment-new", text: t("mk.segments.new") });
  return {
    el: frame("segments", t("nav.segments"), newBtn,
      h("p.muted", { text: t("mk.segments.hint") }),
      segments.length
        ? h("table.grid", {}, h("tr", {}, [t("mk.name"), t("mk.segments.members"), t("mk.updated"), ""].map((x) => h("th", { text: x }))), rows)
        : h("p.empty", { "data-testid": "segments-empty", text: t("mk.segments.none") })),
  };
}

/** True when a condition still lacks its value: no request is made for it (the count would only be an error). */
function incomplete(node) {
  if (!node || typeof node !== "object") return false;
  if ("field" in node) {
    if (["is_set", "not_set", "at_risk", "not_at_risk"].includes(node.operator)) return false;
    const v = node.value;
    if (Array.isArray(v)) return v.length === 0 || v.some((x) => x === "" || x === null || Number.isNaN(x));
    return v === "" || v === undefined || v === null || Number.isNaN(v);
  }
  return (node.rules || []).some(incomplete);
}

async function editor(id) {
  const [defs, inboxes, segment] = await Promise.all([attributeDefinitions(), loadInboxes(), id ? get(`/segments/${id}`) : null]);
  const name = h("input", { value: segment?.name || "", required: true, maxlength: 120, "data-testid": "segment-name" });
  const count = h("strong.big-count", { "data-testid": "segment-count", text: "—" });
  const countNote = h("p.muted", { "data-testid": "segment-count-note" });
  const sample = h("ul.sample", { "data-testid": "segment-sample" });
  const error = errorLine("segment-error");
  let seq = 0;

  const refresh = debounce(async (rules) => {
    const mine = ++seq;
    if (incomplete(rules)) {
      count.textContent = "—";
      countNote.textContent = t("mk.segments.incomplete");
      count.dataset.state = "incomplete";
      return;
    }
    count.dataset.state = "loading";
    try {
      const res = await post("/segments/preview", { rules, sample: 10 });
      if (mine !== seq) return; // an older answer arriving late must not overwrite a newer count
      count.textContent = fmtNum(res.count);
      count.dataset.count = String(res.count);
      count.dataset.state = "ok";
      countNote.textContent = t("mk.segments.count_note");
      replace(sample, res.sample.map((c) => h("li", {},
        h("a", { href: `/contacts/${c.id}`, "data-link": "", text: c.name || c.email || c.phone || `#${c.id}` }),
        c.email ? h("span.muted", { text: " " + c.email }) : null)));
    } catch (err) {
      if (mine !== seq) return;
      count.textContent = "—";
      count.dataset.state = "error";
      countNote.textContent = err.message;
      replace(sample);
    }
  }, 250);
  const builder = new RuleBuilder(defs, inboxes.channels, refresh);
  builder.set(segment?.rules || { op: "and", rules: [] });
  refresh(builder.value());

  const save = h("button.primary", { type: "submit", "data-testid": "segment-save", text: t("mk.save") });
  const form = h("form.mk-card", { "data-testid": "segment-form" },
    fieldBox(t("mk.name"), name), h("h3", { text: t("mk.segments.rules") }), builder.el,
    h("div.actions", {}, save, h("a.button", { href: "/segments", "data-link": "", text: t("mk.back") })), error.el);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    error.hide();
    busy(save, async () => {
      const body = { name: name.value.trim(), rules: builder.value() };
      if (!body.name) throw new Error(t("mk.segments.name_required"));
      const saved = id ? await api("PUT", `/segments/${id}`, body) : await post("/segments", body);
      toast(t("mk.saved"), "ok", 2000);
      if (!id) navigate(`/segments/${saved.id}`, { replace: true });
    }, (err) => error.show(err));
  });
  const aside = h("aside.mk-card.preview-card", {}, h("h3", { text: t("mk.segments.live_count") }), count, countNote,
    h("h4", { text: t("mk.segments.sample") }), sample,
    id ? h("a.button", { href: `/broadcasts/new?segment=${id}`, "data-link": "", "data-testid": "segment-broadcast", text: t("mk.segments.broadcast") }) : null);
  return { el: frame("segments", id ? t("mk.segments.edit") : t("mk.segments.new"), null, h("div.mk-split", {}, form, aside)) };
}
