// SLA policies: first response, next response and resolution targets per priority and inbox, counted
// in business hours or round the clock, with a warning before a breach.
import { api, del, get, post } from "../api.js";
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";
import { checkbox, errorLine, numberInput, selectOf, table, textInput } from "../desk_common.js";

const PRIORITIES = ["low", "normal", "high", "urgent"];
const TARGETS = ["first_response_minutes", "next_response_minutes", "resolution_minutes"];

export async function render(reload) {
  const [data, inboxes] = await Promise.all([get("/desk/sla-policies"), get("/inboxes")]);
  const editor = h("div");
  const rows = data.policies.map((p) => h("tr", { "data-testid": "sla-row", class: p.active ? "" : "inactive" },
    h("td", {}, h("strong", { text: p.name })), h("td", { text: p.priority ? t("priority." + p.priority) : t("ds.any") }),
    h("td", { text: p.inbox_id ? inboxes.items.find((i) => i.id === p.inbox_id)?.name || "#" + p.inbox_id : t("ds.all_inboxes") }),
    TARGETS.map((k) => h("td", { text: p[k] ? t("ds.minutes", { n: p[k] }) : "–" })),
    h("td", { text: p.business_hours ? t("ds.business_time") : t("ds.around_clock") }),
    h("td", {}, h("button", { text: t("ds.edit"), on: { click: () => edit(p) } }), " ",
      h("button.danger", { text: t("admin.delete"), on: { click: async () => {
        if (!confirm(t("admin.confirm_delete", { name: p.name }))) return;
        try {
          await del(`/desk/sla-policies/${p.id}`);
          reload();
        } catch (err) {
          toast(err.message);
        }
      } } }))));
  function edit(p) {
    const error = errorLine("sla-error");
    const name = textInput(p?.name, { "data-testid": "sla-name" });
    const priority = selectOf([["", t("ds.any")], ...PRIORITIES.map((x) => [x, t("priority." + x)])], p?.priority ?? "", { "data-testid": "sla-priority" });
    const inbox = selectOf([["", t("ds.all_inboxes")], ...inboxes.items.map((i) => [i.id, i.name])], p?.inbox_id ?? "", { "data-testid": "sla-inbox" });
    const targets = Object.fromEntries(TARGETS.map((k) => [k, numberInput(p?.[k] ?? "", { min: 1, "data-testid": "sla-" + k })]));
    const warn = numberInput(p?.warn_before_minutes ?? "", { min: 0, "data-testid": "sla-warn", placeholder: t("ds.auto") });
    const business = checkbox(p ? p.business_hours : true, { "data-testid": "sla-business" });
    const active = checkbox(p ? p.active : true, { "data-testid": "sla-active" });
    const save = h("button.primary", { "data-testid": "sla-save", text: t("admin.save"), on: { click: async () => {
      error.hide();
      const body = { name: name.value.trim(), priority: priority.value || null, inbox_id: inbox.value ? Number(inbox.value) : null,
        business_hours: business.checked, active: active.checked };
      for (const k of TARGETS) body[k] = targets[k].value ? Number(targets[k].value) : null;
      if (warn.value !== "") body.warn_before_minutes = Number(warn.value);
      try {
        if (p) await api("PUT", `/desk/sla-policies/${p.id}`, body);
        else await post("/desk/sla-policies", body);
        toast(t("admin.saved"), "ok", 2000);
        reload();
      } catch (err) {
        error.show(err);
      }
    } } });
    replace(editor, h("div.card.desk-form", { "data-testid": "sla-form" },
      h("h3", { text: p ? p.name : t("ds.new_sla") }),
      h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.policy_name") }), name),
        h("label.field", {}, h("span", { text: t("thread.priority") }), priority), h("label.field", {}, h("span", { text: t("filter.inbox") }), inbox)),
      h("div.form-row", {}, TARGETS.map((k) => h("label.field", {}, h("span", { text: t("ds." + k) }), targets[k])),
        h("label.field", {}, h("span", { text: t("ds.warn_before") }), warn)),
      h("label.field.check", {}, business, h("span", { text: t("ds.count_business") })),
      h("label.field.check", {}, active, h("span", { text: t("admin.active") })),
      error.el, h("div.form-actions", {}, save, h("button", { text: t("desk.cancel"), on: { click: () => replace(editor) } }))));
  }
  return h("div", {}, h("p.muted", { text: t("ds.sla_hint") }),
    table([t("ds.policy_name"), t("thread.priority"), t("filter.inbox"), ...TARGETS.map((k) => t("ds." + k)), t("ds.clock"), ""], rows),
    h("button.primary", { "data-testid": "sla-new", text: t("ds.new_sla"), on: { click: () => edit(null) } }), editor);
}
