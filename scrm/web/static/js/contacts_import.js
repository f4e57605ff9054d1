// CSV import: pick a file, map its columns (guessed from the header), dry run with per-line errors, import.
// The server decodes UTF-8 (with or without BOM) and GB18030 from Excel; the browser decodes only the header.
import { post } from "./api.js";
import { h, replace, select } from "./dom.js";
import { t } from "./i18n.js";
import { busy, errorLine, fieldBox, fmtNum } from "./marketing.js";

const GUESS = [
  [/^(name|姓名|名字|客户|客户名称|联系人)$/i, "name"],
  [/^(e-?mail|邮箱|电子邮件|邮件)$/i, "email"],
  [/^(phone|mobile|tel|手机|手机号|电话|联系电话)$/i, "phone"],
  [/^(language|lang|语言)$/i, "language"],
  [/^(tags?|标签)$/i, "tags"],
  [/^(consent|email consent|邮件同意|同意邮件|订阅)$/i, "consent.email"],
];

function decodeHead(buffer) {
  const bytes = new Uint8Array(buffer.slice(0, 64 * 1024));
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes).replace(/^\ufeff/, "");
  } catch {
    try {
      return new TextDecoder("gb18030").decode(bytes); // what Excel on Chinese Windows saves
    } catch {
      return new TextDecoder("utf-8").decode(bytes);
    }
  }
}

/** The first CSV record's cells (quotes and doubled quotes handled). */
export function csvHeader(text) {
  const cells = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") {
      cells.push(cell.trim());
      cell = "";
    } else if (ch === "\n" || ch === "\r") break;
    else cell += ch;
  }
  cells.push(cell.trim());
  return cells.filter((c, i) => c || i < cells.length - 1);
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function importPanel(defs, onImported) {
  const targets = [["ignore", t("mk.import.ignore")], ["name", t("contact.name")], ["email", t("contact.email")],
    ["phone", t("contact.phone")], ["language", t("mk.field.language")], ["tags", t("mk.import.tags")],
    ["consent.email", t("mk.import.consent_email")],
    ...defs.map((d) => ["attributes." + d.key, `${t("mk.field.attribute")}: ${d.label}`])];
  const file = h("input", { type: "file", accept: ".csv,text/csv", "data-testid": "import-file" });
  const mapping = h("div.mapping", { "data-testid": "import-mapping" });
  const result = h("div.import-result", { "data-testid": "import-result" });
  const error = errorLine("import-error");
  const dry = h("button", { type: "button", disabled: true, "data-testid": "import-dry-run", text: t("mk.import.dry_run") });
  const run = h("button.primary", { type: "button", disabled: true, "data-testid": "import-run", text: t("mk.import.run") });
  let buffer = null;
  let selects = [];

  file.addEventListener("change", async () => {
    error.hide();
    replace(result);
    const f = file.files[0];
    if (!f) return;
    buffer = await f.arrayBuffer();
    const header = csvHeader(decodeHead(buffer));
    selects = header.map((col) => {
      const attr = defs.find((d) => d.key.toLowerCase() === col.toLowerCase() || d.label === col);
      const guess = GUESS.find(([re]) => re.test(col))?.[1] || (attr ? "attributes." + attr.key : "ignore");
      return [col, select(targets, guess, { "aria-label": col, "data-testid": "map-" + col })];
    });
    replace(mapping, h("table.grid", {}, h("tr", {}, h("th", { text: t("mk.import.column") }), h("th", { text: t("mk.import.field") })),
      selects.map(([col, sel]) => h("tr", {}, h("td", {}, h("code", { text: col })), h("td", {}, sel)))));
    dry.disabled = run.disabled = false;
  });

  async function send(dryRun, button) {
    error.hide();
    await busy(button, async () => {
      const map = Object.fromEntries(selects.filter(([, sel]) => sel.value !== "ignore").map(([col, sel]) => [col, sel.value]));
      const res = await post("/contact-import", { data_base64: toBase64(buffer), mapping: map, dry_run: dryRun });
      showResult(res);
      if (!dryRun) onImported();
    }, (err) => error.show(err));
  }

  function showResult(res) {
    replace(result,
      h("p", { "data-testid": "import-summary", text: t(res.dry_run ? "mk.import.summary_dry" : "mk.import.summary",
        { rows: fmtNum(res.rows), created: fmtNum(res.created), updated: fmtNum(res.updated), failed: fmtNum(res.failed) }) }),
      res.errors.length ? h("table.grid.import-errors", { "data-testid": "import-errors" },
        h("tr", {}, h("th", { text: t("mk.import.line") }), h("th", { text: t("mk.import.problem") })),
        res.errors.map((e) => h("tr", { "data-testid": "import-error-row" }, h("td", { text: String(e.row) }), h("td", { text: e.message })))) : null,
      res.failed > res.errors.length ? h("p.muted", { text: t("mk.import.more_errors", { n: res.failed - res.errors.length }) }) : null);
  }

  dry.addEventListener("click", () => send(true, dry));
  run.addEventListener("click", () => send(false, run));
  const el = h("section.mk-card.import", { hidden: true, "data-testid": "import-panel" },
    h("h3", { text: t("mk.import.title") }), h("p.muted", { text: t("mk.import.hint") }),
    fieldBox(t("mk.import.file"), file), mapping, h("div.actions", {}, dry, run), error.el, result);
  return { el };
}
