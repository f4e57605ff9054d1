// The FAQ knowledge base: entries (admins edit, agents read), "try a question" with the matcher's
// candidates and why they matched, unanswered questions to promote, and import / export.
import { ApiError, api, del, get, post, qs } from "./api.js";
import { debounce, h, replace, safeUrl } from "./dom.js";
import { fmtAgo, t } from "./i18n.js";
import { isAdmin, state } from "./state.js";
import { toast } from "./toast.js";
import { deskFrame, errorLine, forbidden, selectOf, subnav, SUPPORT_ROLES } from "./desk_common.js";

const TABS = ["entries", "try", "unanswered", "import"];
const KNOWN_CANDIDATE_FIELDS = new Set(["id", "confidence", "score", "matched", "matched_terms", "question", "answer"]);
// Shown in their own lines; the rest of a match result (features, contributions...) is listed as it comes.
const KNOWN_RESULT_FIELDS = new Set(["decision", "candidates", "probability", "answer_precision", "clarify_precision", "reason", "decided_by", "trigger"]);

export function kbPage(path) {
  const body = h("div.kb-body");
  const el = h("div.desk-wrap");
  function show(p) {
    if (!SUPPORT_ROLES.includes(state.me?.role)) return replace(el, forbidden("desk.forbidden_support"));
    const tab = TABS.find((x) => p === "/kb/" + x) || "entries";
    replace(el, deskFrame("kb", t("nav.kb"), isAdmin() ? null : h("span.chip", { "data-testid": "kb-readonly", text: t("kb.read_only") }),
      subnav("/kb", TABS, tab, "kb.tab"), body));
    replace(body, h("p.loading", { text: t("loading") }));
    ({ entries, try: tryQuestion, unanswered, import: importExport })[tab](body).catch((err) =>
      replace(body, h("p.page-error", { role: "alert", text: err.message })));
  }
  show(path);
  return { name: "kb", el, route: show };
}

/** Answer text with its line breaks and its http(s) links clickable (nothing else becomes markup). */
export function answerView(text) {
  const out = h("div.answer-text", { "data-testid": "answer-preview" });
  const re = /https?:\/\/[^\s<>"'）)】]+/g;
  let last = 0;
  for (const m of String(text || "").matchAll(re)) {
    out.append(text.slice(last, m.index));
    const url = safeUrl(m[0]);
    out.append(url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: m[0] }) : m[0]);
    last = m.index + m[0].length;
  }
  out.append(String(text || "").slice(last));
  return out;
}

async function entries(body) {
  const admin = isAdmin();
  const list = h("tbody", { "data-testid": "kb-rows" });
  const editor = h("div.kb-editor", { "data-testid": "kb-editor" });
  const search = h("input", { type: "search", placeholder: t("kb.search"), "data-testid": "kb-search" });
  const category = selectOf([["", t("kb.any_category")]], "", { "data-testid": "kb-category" });
  let rows = [];
  async function load() {
    const data = await get("/faq" + qs({ q: search.value.trim(), category: category.value, limit: 500 }));
    rows = data.items;
    const cats = [...new Set(rows.map((r) => r.category).filter(Boolean))].sort();
    if (!category.value) replace(category, h("option", { value: "", text: t("kb.any_category") }), cats.map((c) => h("option", { value: c, text: c })));
    replace(list, rows.length ? rows.map(rowEl) : h("tr", {}, h("td.empty-cell", { colspan: 6, text: t("kb.empty") })));
  }
  function rowEl(e) {
    const toggle = h("input", { type: "checkbox", checked: e.enabled, disabled: !admin, "data-testid": "kb-enabled",
      "aria-label": t("kb.enabled") });
    toggle.addEventListener("click", (ev) => ev.stopPropagation());
    toggle.addEventListener("change", async () => {
      try {
        await api("PATCH", `/faq/entries/${encodeURIComponent(e.id)}`, { enabled: toggle.checked });
        e.enabled = toggle.checked;
      } catch (err) {
        toast(err.message);
        toggle.checked = e.enabled;
      }
    });
    return h("tr.kb-row", { "data-testid": "kb-row", "data-key": e.id, tabindex: 0, class: e.enabled ? "" : "inactive",
      on: { click: () => edit(e), keydown: (ev) => ev.key === "Enter" && edit(e) } },
      h("td", {}, h("code", { text: e.id })), h("td", { text: e.question }), h("td", { text: e.category || "–" }),
      h("td", { text: e.language }), h("td", { text: String(e.paraphrases.length) }), h("td", {}, toggle));
  }
  function edit(e) {
    const isNew = !e;
    e = e || { id: "", question: "", paraphrases: [], answer: "", category: "", language: "zh", enabled: true, buttons: [] };
    const error = errorLine("kb-error");
    const key = h("input", { value: e.id, disabled: !isNew || !admin, required: true, pattern: "[A-Za-z0-9_.\\-]+", "data-testid": "kb-key" });
    const question = h("input", { value: e.question, disabled: !admin, "data-testid": "kb-question" });
    const paraphrases = h("textarea", { rows: 4, disabled: !admin, "data-testid": "kb-paraphrases" });
    paraphrases.value = e.paraphrases.join("\n");
    const answer = h("textarea", { rows: 5, disabled: !admin, "data-testid": "kb-answer" });
    answer.value = e.answer;
    const preview = h("div.preview-box", {}, answerView(e.answer));
    answer.addEventListener("input", debounce(() => replace(preview, answerView(answer.value)), 200));
    const cat = h("input", { value: e.category || "", disabled: !admin, "data-testid": "kb-cat", list: "kb-cats" });
    const lang = selectOf([["zh", "中文 zh"], ["en", "English en"]], e.language, { disabled: !admin, "data-testid": "kb-lang" });
    const enabled = h("input", { type: "checkbox", checked: e.enabled, disabled: !admin, "data-testid": "kb-enabled-edit" });
    const save = h("button.primary", { "data-testid": "kb-save", text: isNew ? t("kb.create") : t("admin.save"), hidden: !admin });
    save.addEventListener("click", async () => {
      error.hide();
      const data = { question: question.value.trim(), paraphrases: paraphrases.value.split("\n").map((s) => s.trim()).filter(Boolean),
        answer: answer.value, category: cat.value.trim() || null, language: lang.value, enabled: enabled.checked };
      try {
        if (isNew) await post("/faq", { id: key.value.trim(), ...data, buttons: [] });
        else await api("PATCH", `/faq/entries/${encodeURIComponent(e.id)}`, data);
        toast(t("admin.saved"), "ok", 2000);
        replace(editor);
        await load();
      } catch (err) {
        error.show(err);
      }
    });
    const remove = !isNew && admin ? h("button.danger", { "data-testid": "kb-delete", text: t("admin.delete"), on: { click: async () => {
      if (!confirm(t("admin.confirm_delete", { name: e.id }))) return;
      try {
        await del(`/faq/entries/${encodeURIComponent(e.id)}`);
        replace(editor);
        await load();
      } catch (err) {
        error.show(err);
      }
    } } }) : null;
    replace(editor, h("div.card.kb-form", {},
      h("h3", { text: isNew ? t("kb.new") : t("kb.entry", { id: e.id }) }),
      h("div.form-row", {}, h("label.field", {}, h("span", { text: t("kb.key") }), key),
        h("label.field", {}, h("span", { text: t("kb.category") }), cat), h("label.field", {}, h("span", { text: t("kb.language") }), lang),
        h("label.field.check", {}, enabled, h("span", { text: t("kb.enabled") }))),
      h("label.field.wide", {}, h("span", { text: t("kb.question") }), question),
      h("label.field.wide", {}, h("span", { text: t("kb.paraphrases") }), paraphrases, h("small.muted", { text: t("kb.paraphrases_hint") })),
      h("label.field.wide", {}, h("span", { text: t("kb.answer") }), answer, h("small.muted", { text: t("kb.answer_hint") })),
      h("div.field.wide", {}, h("span.muted", { text: t("kb.preview") }), preview),
      error.el, h("div.form-actions", {}, save, remove, h("button", { text: t("desk.close"), on: { click: () => replace(editor) } }))));
    editor.scrollIntoView?.({ block: "nearest" });
  }
  search.addEventListener("input", debounce(load, 300));
  category.addEventListener("change", load);
  await load();
  replace(body, h("div.filters.desk-filters", {}, search, category,
    admin ? h("button.primary", { "data-testid": "kb-new", text: t("kb.new"), on: { click: () => edit(null) } }) : null),
  h("table.grid.desk-table", {}, h("thead", {}, h("tr", {}, [t("kb.key"), t("kb.question"), t("kb.category"), t("kb.language"),
    t("kb.paraphrase_count"), t("kb.enabled")].map((x) => h("th", { text: x })))), list), editor);
}

function extraValue(v) {
  if (Array.isArray(v)) return v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ");
  if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`).join("; ");
  return String(v ?? "");
}

async function tryQuestion(body) {
  const input = h("input.wide-input", { placeholder: t("kb.try_placeholder"), "data-testid": "kb-try-input" });
  const out = h("div.try-result", { "data-testid": "kb-try-result" });
  const go = h("button.primary", { type: "submit", "data-testid": "kb-try-go", text: t("kb.try_go") });
  const form = h("form.try-form", { on: { submit: async (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    go.disabled = true;
    try {
      const r = await post("/faq/match", { text: input.value.trim() });
      const extraTop = Object.entries(r).filter(([k]) => !KNOWN_RESULT_FIELDS.has(k));
      const pct = (x) => (typeof x === "number" ? Math.round(x * 100) + "%" : "–");
      replace(out,
        h("p", {}, h("strong", { text: t("kb.decision") + ": " }), h("span.chip", { "data-testid": "kb-decision", text: labelOr("kb.decision_", r.decision) }),
          " ", h("span.muted", { "data-testid": "kb-probability", text: t("kb.probability_line", { p: pct(r.probability), target: pct(r.answer_precision), clarify: pct(r.clarify_precision) }) })),
        r.reason ? h("p", { "data-testid": "kb-reason", text: t("kb.reason") + ": " + r.reason }) : null,
        r.decided_by ? h("p.muted", { "data-testid": "kb-decided-by", text: t("kb.decided_by") + ": " + (r.decided_by.label || r.decided_by.feature) }) : null,
        r.trigger ? h("p", { "data-testid": "kb-trigger", text: t("kb.trigger", { flow: r.trigger.flow, phrase: r.trigger.phrase || "" }) }) : null,
        extraTop.length ? h("details.kb-details", {}, h("summary", { text: t("kb.details") }),
          extraTop.map(([k, v]) => h("p.muted", { "data-testid": "kb-extra-" + k, text: `${k}: ${extraValue(v)}` }))) : null,
        h("table.grid.desk-table", {}, h("thead", {}, h("tr", {}, ["#", t("kb.key"), t("kb.question"), t("kb.confidence"), t("kb.score"),
          t("kb.matched"), t("kb.why")].map((x) => h("th", { text: x })))),
        h("tbody", {}, r.candidates.length ? r.candidates.map((c, i) => h("tr", { "data-testid": "kb-candidate" },
          h("td", { text: String(i + 1) }), h("td", {}, h("code", { text: c.id })), h("td", { text: c.question || "" }),
          h("td", {}, h("meter", { min: 0, max: 1, value: c.confidence }), " ", h("span", { text: c.confidence.toFixed(3) })),
          h("td", { text: String(c.score) }),
          h("td", {}, h("div", { text: c.matched || "" }), c.matched_terms?.length ? h("div.muted", { "data-testid": "kb-matched-terms", text: t("kb.matched_terms") + ": " + c.matched_terms.join(" / ") }) : null),
          h("td.why", { "data-testid": "kb-why" }, Object.entries(c).filter(([k]) => !KNOWN_CANDIDATE_FIELDS.has(k))
            .map(([k, v]) => h("div", {}, h("span.muted", { text: k + ": " }), h("span", { text: extraValue(v) }))))))
          : h("tr", {}, h("td.empty-cell", { colspan: 7, text: t("kb.no_candidates") })))));
    } catch (err) {
      replace(out, h("p.error", { role: "alert", text: err.message }));
    } finally {
      go.disabled = false;
    }
  } } }, input, go);
  replace(body, h("p.muted", { text: t("kb.try_hint") }), form, out);
}

function labelOr(prefix, code) {
  const text = t(prefix + code);
  return text === prefix + code ? String(code) : text;
}

async function unanswered(body) {
  const admin = isAdmin();
  const [groups, entriesData] = await Promise.all([get("/faq/unanswered"), get("/faq?limit=500")]);
  const options = entriesData.items.map((e) => [e.id, `${e.id} · ${e.question}`]);
  const cards = groups.groups.map((g) => {
    const error = errorLine("kb-promote-error");
    const target = selectOf([["", t("kb.pick_entry")], ...options], "", { "data-testid": "kb-promote-target", disabled: !admin });
    const addBtn = h("button", { "data-testid": "kb-add-paraphrase", text: t("kb.add_paraphrase"), hidden: !admin, on: { click: async () => {
      if (!target.value) return error.show(new Error(t("kb.pick_entry")));
      try {
        await post(`/faq/unanswered/${g.ids.join(",")}/promote`, { entry: target.value });
        toast(t("kb.promoted", { id: target.value }), "ok", 3000);
        unanswered(body);
      } catch (err) {
        error.show(err);
      }
    } } });
    const newKey = h("input", { placeholder: t("kb.key"), "data-testid": "kb-new-key", hidden: !admin });
    const newAnswer = h("input", { placeholder: t("kb.answer"), "data-testid": "kb-new-answer", hidden: !admin });
    const newBtn = h("button", { "data-testid": "kb-new-entry", text: t("kb.new_entry"), hidden: !admin, on: { click: async () => {
      try {
        await post(`/faq/unanswered/${g.ids.join(",")}/promote`, { new_entry: { id: newKey.value.trim(), answer: newAnswer.value } });
        toast(t("kb.promoted", { id: newKey.value.trim() }), "ok", 3000);
        unanswered(body);
      } catch (err) {
        error.show(err);
      }
    } } });
    return h("div.card.unanswered", { "data-testid": "kb-group" },
      h("div.group-head", {}, h("strong", { text: g.sample }), " ", h("span.chip", { text: t("kb.times", { n: g.count }) }),
        h("span.muted", { text: " " + fmtAgo(g.last_at) })),
      g.texts.length > 1 ? h("ul.group-texts", {}, g.texts.slice(1, 6).map((x) => h("li", { text: x }))) : null,
      admin ? h("div.promote", {}, target, addBtn, h("span.muted", { text: t("kb.or") }), newKey, newAnswer, newBtn) : null, error.el);
  });
  replace(body, h("p.muted", { text: t("kb.unanswered_hint") }),
    cards.length ? cards : h("p.empty", { "data-testid": "kb-no-unanswered", text: t("kb.no_unanswered") }));
}

async function importExport(body) {
  const admin = isAdmin();
  const exports = h("p", {}, t("kb.export") + ": ", ["csv", "json", "yaml"].map((f) =>
    [h("a.button", { href: `/api/v1/faq/export?format=${f}`, download: `faq.${f}`, "data-testid": "kb-export-" + f, text: f.toUpperCase() }), " "]));
  if (!admin) return replace(body, exports);
  const file = h("input", { type: "file", accept: ".csv,.json,.yaml,.yml", "data-testid": "kb-import-file" });
  const report = h("div.import-report", { "data-testid": "kb-import-report" });
  async function send(dryRun) {
    const f = file.files[0];
    if (!f) return replace(report, h("p.error", { text: t("kb.pick_file") }));
    const ext = f.name.split(".").pop().toLowerCase();
    const format = ext === "yml" ? "yaml" : ext;
    const resp = await fetch(`/api/v1/faq/import?format=${encodeURIComponent(format)}${dryRun ? "&dry_run=1" : ""}`, {
      method: "POST", credentials: "same-origin", body: await f.text(),
      headers: { "Content-Type": "text/plain; charset=utf-8", "X-CSRF-Token": state.csrf || "", Accept: "application/json" } });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok && !data.error?.errors) throw new ApiError(resp.status, data.error?.code, data.error?.message || `HTTP ${resp.status}`);
    const errors = data.errors || data.error?.errors || [];
    replace(report,
      h("p", { text: dryRun ? t("kb.dry_run_result", { valid: data.valid ?? 0, errors: errors.length })
        : resp.ok ? t("kb.imported", { created: data.created ?? 0, updated: data.updated ?? 0 }) : data.error.message }),
      errors.length ? h("ul.errors", {}, errors.map((e) => h("li", { text: t("kb.line_error", { line: e.line, message: e.message }) }))) : null);
  }
  const dry = h("button", { "data-testid": "kb-dry-run", text: t("kb.dry_run"), on: { click: () => send(true).catch((e) => toast(e.message)) } });
  const run = h("button.primary", { "data-testid": "kb-import", text: t("kb.import"), on: { click: () => send(false).catch((e) => toast(e.message)) } });
  replace(body, exports, h("h3", { text: t("kb.import") }), h("p.muted", { text: t("kb.import_hint") }), file, " ", dry, " ", run, report);
}
