// Business hours: the weekly hours in a time zone, public holidays and make-up working days (调休).
// China's official calendar for a year is imported from the server (chinesecalendar), then editable.
import { api, get } from "../api.js";
import { h, replace } from "../dom.js";
import { getLang, t } from "../i18n.js";
import { toast } from "../toast.js";
import { errorLine, numberInput, textArea, textInput } from "../desk_common.js";

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function spansText(v) {
  if (v === null || v === undefined || v === "closed") return "";
  return Array.isArray(v) ? v.join(", ") : String(v);
}

function spansValue(text) {
  const parts = text.split(/[,，;；\s]+/).map((s) => s.trim()).filter(Boolean);
  return parts.length === 0 ? null : parts.length === 1 ? parts[0] : parts;
}

export async function render() {
  const { business_hours: cfg } = await get("/desk/settings/business_hours");
  const error = errorLine("hours-error");
  const zone = textInput(cfg.timezone || "Asia/Shanghai", { "data-testid": "hours-tz" });
  const weekly = Object.fromEntries(DAYS.map((d) => [d, textInput(spansText(cfg.weekly?.[d]), { placeholder: t("ds.closed"),
    "data-testid": "hours-" + d })]));
  const holidays = textArea((cfg.holidays || []).join("\n"), { rows: 8, "data-testid": "hours-holidays" });
  const makeup = textArea(Object.entries(cfg.special_days || {}).map(([d, v]) => `${d} ${spansText(v)}`.trim()).join("\n"),
    { rows: 6, "data-testid": "hours-workdays" });
  const year = numberInput(new Date().getFullYear(), { min: 2004, max: 2100, "data-testid": "hours-cn-year" });
  const imported = h("div.imported", { "data-testid": "hours-cn-result" });
  const importBtn = h("button", { "data-testid": "hours-cn-import", text: t("ds.cn_import"), on: { click: async () => {
    try {
      const data = await get(`/desk/holidays/cn?year=${Number(year.value)}`);
      const zh = getLang() === "zh";
      const have = new Set(holidays.value.split("\n").map((s) => s.trim()).filter(Boolean));
      // Weekend days inside a holiday block are closed anyway; only weekdays need listing.
      for (const d of data.holidays) if (!d.weekend) have.add(d.date);
      holidays.value = [...have].sort().join("\n");
      const special = new Map(makeup.value.split("\n").map((s) => s.trim()).filter(Boolean).map((line) => [line.slice(0, 10), line]));
      const workHours = spansText(spansValue(weekly.mon.value) ?? "09:00-18:00") || "09:00-18:00";
      for (const d of data.workdays) if (!special.has(d.date)) special.set(d.date, `${d.date} ${workHours}`);
      makeup.value = [...special.keys()].sort().map((k) => special.get(k)).join("\n");
      replace(imported, h("p.muted", { text: t("ds.cn_imported", { year: data.year, holidays: data.holidays.length,
        workdays: data.workdays.length, source: data.source }) }),
      h("ul.cn-days", {}, [...data.holidays.filter((d) => !d.weekend).map((d) => h("li", { text: `${d.date} ${zh ? d.name_zh : d.name}` })),
        ...data.workdays.map((d) => h("li.makeup", { text: `${d.date} ${t("ds.makeup_day")} (${zh ? d.name_zh : d.name})` }))]));
    } catch (err) {
      replace(imported, h("p.error", { role: "alert", "data-testid": "hours-cn-error", text: err.message }));
    }
  } } });
  const save = h("button.primary", { "data-testid": "hours-save", text: t("admin.save"), on: { click: async () => {
    error.hide();
    const special = {};
    for (const line of makeup.value.split("\n").map((s) => s.trim()).filter(Boolean)) {
      const [date, ...rest] = line.split(/\s+/);
      special[date] = spansValue(rest.join(" ")) ?? "09:00-18:00";
    }
    const body = { timezone: zone.value.trim(), weekly: Object.fromEntries(DAYS.map((d) => [d, spansValue(weekly[d].value)])),
      holidays: holidays.value.split("\n").map((s) => s.trim()).filter(Boolean), special_days: special };
    try {
      await api("PUT", "/desk/settings/business_hours", body);
      toast(t("admin.saved"), "ok", 2000);
    } catch (err) {
      error.show(err);
    }
  } } });
  return h("div.card.desk-form", { "data-testid": "hours-form" },
    h("p.muted", { text: t("ds.hours_hint") }),
    h("label.field", {}, h("span", { text: t("ds.timezone") }), zone),
    h("div.week-grid", {}, DAYS.map((d) => h("label.field", {}, h("span", { text: t("ds.day." + d) }), weekly[d]))),
    h("div.form-row", {},
      h("label.field", {}, h("span", { text: t("ds.holidays") }), holidays, h("small.muted", { text: t("ds.holidays_hint") })),
      h("label.field", {}, h("span", { text: t("ds.workdays") }), makeup, h("small.muted", { text: t("ds.workdays_hint") }))),
    h("fieldset", {}, h("legend", { text: t("ds.cn_title") }), h("p.muted", { text: t("ds.cn_hint") }),
      h("div.form-actions", {}, year, importBtn), imported),
    error.el, h("div.form-actions", {}, save));
}
