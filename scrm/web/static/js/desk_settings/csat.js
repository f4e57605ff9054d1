// CSAT: whether the survey is asked on resolve, for how long answers count, and its texts per language.
import { api, get } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";
import { checkbox, errorLine, numberInput, textArea } from "../desk_common.js";

export async function render() {
  const { csat } = await get("/desk/settings/csat");
  const error = errorLine("csat-error");
  const enabled = checkbox(csat.enabled, { "data-testid": "csat-enabled" });
  const onlyHuman = checkbox(csat.only_when_human, { "data-testid": "csat-human" });
  const hours = numberInput(csat.answer_hours, { min: 1, max: 720, "data-testid": "csat-hours" });
  const zh = textArea(csat.question_zh, { "data-testid": "csat-zh" });
  const en = textArea(csat.question_en, { "data-testid": "csat-en" });
  const thanks = textArea(csat.thanks, { rows: 2, "data-testid": "csat-thanks" });
  const save = h("button.primary", { "data-testid": "csat-save", text: t("admin.save"), on: { click: async () => {
    error.hide();
    try {
      await api("PUT", "/desk/settings/csat", { enabled: enabled.checked, only_when_human: onlyHuman.checked,
        answer_hours: Number(hours.value), question_zh: zh.value, question_en: en.value, thanks: thanks.value });
      toast(t("admin.saved"), "ok", 2000);
    } catch (err) {
      error.show(err);
    }
  } } });
  return h("div.card.desk-form", {},
    h("label.field.check", {}, enabled, h("span", { text: t("ds.csat_enabled") })),
    h("label.field.check", {}, onlyHuman, h("span", { text: t("ds.csat_only_human") })),
    h("label.field", {}, h("span", { text: t("ds.csat_hours") }), hours),
    h("label.field.wide", {}, h("span", { text: t("ds.csat_zh") }), zh),
    h("label.field.wide", {}, h("span", { text: t("ds.csat_en") }), en),
    h("label.field.wide", {}, h("span", { text: t("ds.csat_thanks") }), thanks),
    error.el, h("div.form-actions", {}, save));
}
