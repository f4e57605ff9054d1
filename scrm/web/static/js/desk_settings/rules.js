// Automation rules: when (event), if (conditions), then (actions), in a form; a dry run shows which
// recent conversations the conditions would have matched before the rule is saved.
import { api, del, get, post } from "../api.js";
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";
import { agentOptions, checkbox, errorLine, numberInput, selectOf, table, textArea, textInput, tr, when } from "../desk_common.js";

const PRIORITIES = ["low", "normal", "high", "urgent"];
const STATUSES = ["open", "pending", "snoozed", "resolved"];
const SLA_KINDS = ["first_response", "next_response", "resolution"];
const CHANNELS = ["api", "telegram", "wechat_oa", "email", "memory", "web", "wecom"];
const ACTIONS = ["assign_agent", "assign_team", "add_label", "add_tag", "set_priority", "send_message", "send_canned",
  "handoff", "open_ticket", "call_webhook"];
const list = (text) => text.split(/[,，、\n]/).map((s) => s.trim()).filter(Boolean);

function checks(values, chosen, labelOf, testid) {
  const set = new Set(chosen || []);
  const boxes = values.map(([v, label]) => {
    const box = checkbox(set.has(v), { "data-testid": testid, "data-value": v });
    box.addEventListener("change", () => (box.checked ? set.add(v) : set.delete(v)));
    return h("label.member", {}, box, " ", label ?? labelOf(v));
  });
  return { el: h("div.members", {}, boxes), get: () => (set.size ? [...set] : null) };
}

export async function render(reload) {
  const [data, inboxes, teams, hooks, defs] = await Promise.all([get("/desk/rules"), get("/inboxes"), get("/desk/teams"),
    get("/desk/webhooks").catch(() => ({ webhooks: [] })), get("/attribute-definitions").catch(() => ({ definitions: [] }))]);
  const panel = h("div");
  const rows = data.rules.map((r) => h("tr", { "data-testid": "rule-row", class: r.active ? "" : "inactive" },
    h("td", {}, h("strong", { text: r.name })), h("td", {}, h("code", { text: r.event })),
    h("td", { text: Object.keys(r.conditions || {}).map((k) => tr("ds.cond", k)).join(", ") || t("ds.always") }),
    h("td", { text: (r.actions || []).map((a) => tr("ds.action", a.type)).join(", ") }),
    h("td", { text: String(r.position) }),
    h("td", {}, h("button", { text: t("ds.edit"), on: { click: () => edit(r) } }), " ",
      h("button.danger", { text: t("admin.delete"), on: { click: async () => {
        if (!confirm(t("admin.confirm_delete", { name: r.name }))) return;
        try {
          await del(`/desk/rules/${r.id}`);
          reload();
        } catch (err) {
          toast(err.message);
        }
      } } }))));

  function actionRow(a, remove) {
    const type = selectOf(ACTIONS.map((x) => [x, tr("ds.action", x)]), a.type, { "data-testid": "rule-action-type" });
    const params = h("span.action-params");
    let read = () => ({});
    function draw() {
      const kind = type.value;
      if (kind === "assign_agent") {
        const s = selectOf(agentOptions(), a.agent_id ?? "", { "data-testid": "rule-action-agent" });
        read = () => ({ agent_id: Number(s.value) });
        replace(params, s);
      } else if (kind === "assign_team") {
        const s = selectOf(teams.teams.map((x) => [x.id, x.name]), a.team_id ?? "", { "data-testid": "rule-action-team" });
        read = () => ({ team_id: Number(s.value) });
        replace(params, s);
      } else if (kind === "set_priority") {
        const s = selectOf(PRIORITIES.map((x) => [x, t("priority." + x)]), a.priority ?? "high", { "data-testid": "rule-action-priority" });
        read = () => ({ priority: s.value });
        replace(params, s);
      } else if (kind === "handoff") {
        const s = selectOf([["queue", t("handler.queue")], ["bot", t("handler.bot")]], a.to ?? "queue");
        read = () => ({ to: s.value });
        replace(params, s);
      } else if (kind === "call_webhook") {
        const s = selectOf(hooks.webhooks.map((x) => [x.id, x.name]), a.webhook_id ?? "");
        read = () => ({ webhook_id: Number(s.value) });
        replace(params, s);
      } else if (kind === "open_ticket") {
        const subject = textInput(a.subject, { placeholder: t("tickets.subject") });
        read = () => ({ subject: subject.value.trim() || null });
        replace(params, subject);
      } else {
        const key = { add_label: "label", add_tag: "tag", send_message: "text", send_canned: "shortcut" }[kind];
        const input = kind === "send_message" ? textArea(a.text, { rows: 2, "data-testid": "rule-action-text" })
          : textInput(a[key], { "data-testid": "rule-action-value" });
        read = () => ({ [key]: input.value.trim() });
        replace(params, input);
      }
    }
    type.addEventListener("change", draw);
    draw();
    const el = h("div.action-row", { "data-testid": "rule-action" }, type, params, h("button.link", { text: "×", "aria-label": t("admin.delete"), on: { click: remove } }));
    return { el, get: () => ({ type: type.value, ...read() }) };
  }

  /** "Customer attribute equals value" rows; the value input follows the attribute's type (choices as a list). */
  function attributeRows(saved) {
    const types = new Map(defs.definitions.map((d) => [d.key, d]));
    const keys = [...new Set([...types.keys(), ...Object.keys(saved || {})])];
    const box = h("div.attr-conds");
    const rows = [];
    const add = (key, value) => {
      const keySel = selectOf(keys.map((k) => [k, types.get(k)?.label || k]), key ?? keys[0] ?? "", { "data-testid": "rule-cond-attr-key" });
      const slot = h("span");
      let input;
      const draw = () => {
        const def = types.get(keySel.value);
        input = def?.type === "choice"
          ? selectOf(def.choices.map((c) => [c, c]), value ?? def.choices[0] ?? "", { "data-testid": "rule-cond-attr-value" })
          : textInput(value ?? "", { "data-testid": "rule-cond-attr-value",
            type: def?.type === "number" ? "number" : def?.type === "date" ? "date" : "text" });
        replace(slot, input);
        value = undefined;
      };
      keySel.addEventListener("change", draw);
      draw();
      const row = { el: h("div.action-row", { "data-testid": "rule-cond-attr" }, keySel, h("span", { text: " = " }), slot,
        h("button.link", { text: "×", "aria-label": t("admin.delete"), on: { click: () => { rows.splice(rows.indexOf(row), 1); row.el.remove(); } } })),
      get: () => [keySel.value, types.get(keySel.value)?.type === "number" && input.value !== "" ? Number(input.value) : input.value] };
      rows.push(row);
      box.append(row.el);
    };
    for (const [k, v] of Object.entries(saved || {})) add(k, String(v));
    const addBtn = h("button.link", { "data-testid": "rule-cond-attr-add", text: t("ds.add_condition"), disabled: !keys.length,
      on: { click: () => add() } });
    return { el: h("div", {}, box, addBtn),
      get: () => { const out = Object.fromEntries(rows.map((r) => r.get()).filter(([k, v]) => k && v !== "")); return Object.keys(out).length ? out : null; } };
  }

  function edit(r) {
    const c = r?.conditions || {};
    const error = errorLine("rule-error");
    const name = textInput(r?.name, { "data-testid": "rule-name" });
    const event = selectOf(data.events.map((e) => [e, tr("ds.event_name", e)]), r?.event ?? "message.created", { "data-testid": "rule-event" });
    const position = numberInput(r?.position ?? 0, { min: 0 });
    const active = checkbox(r ? r.active : true, { "data-testid": "rule-active" });
    const cond = {
      inbox_ids: checks(inboxes.items.map((i) => [i.id, i.name]), c.inbox_ids, null, "rule-cond-inbox"),
      channels: checks(CHANNELS.map((x) => [x, x]), c.channels, null, "rule-cond-channel"),
      priority: checks(PRIORITIES.map((x) => [x, t("priority." + x)]), c.priority, null, "rule-cond-priority"),
      status: checks(STATUSES.map((x) => [x, t("status." + x)]), c.status, null, "rule-cond-status"),
      sla_kind: checks(SLA_KINDS.map((x) => [x, tr("notif.sla", x)]), c.sla_kind, null, "rule-cond-sla"),
    };
    const text = textInput((c.text_contains || []).join(", "), { "data-testid": "rule-cond-text" });
    const tags = textInput((c.contact_tags || []).join(", "), { "data-testid": "rule-cond-tags" });
    const labels = textInput((c.labels || []).join(", "), { "data-testid": "rule-cond-labels" });
    const hours = selectOf([["", t("ds.any")], ["open", t("ds.in_hours")], ["closed", t("ds.out_of_hours")]], c.business_hours ?? "", { "data-testid": "rule-cond-hours" });
    const direction = selectOf([["", t("ds.any")], ["in", t("ds.dir_in")], ["out", t("ds.dir_out")]], c.direction ?? "", { "data-testid": "rule-cond-direction" });
    const attrs = attributeRows(c.contact_attributes);
    const actionsBox = h("div.actions-box");
    const actions = [];
    const addAction = (a) => {
      const row = actionRow(a, () => {
        actions.splice(actions.indexOf(row), 1);
        row.el.remove();
      });
      actions.push(row);
      actionsBox.append(row.el);
    };
    for (const a of r?.actions || [{ type: "add_label", label: "" }]) addAction(a);
    const body = () => {
      const conditions = {};
      for (const [k, v] of Object.entries(cond)) if (v.get()) conditions[k] = k === "inbox_ids" ? v.get().map(Number) : v.get();
      if (list(text.value).length) conditions.text_contains = list(text.value);
      if (list(tags.value).length) conditions.contact_tags = list(tags.value);
      if (list(labels.value).length) conditions.labels = list(labels.value);
      if (hours.value) conditions.business_hours = hours.value;
      if (direction.value) conditions.direction = direction.value;
      if (attrs.get()) conditions.contact_attributes = attrs.get();
      return { name: name.value.trim(), event: event.value, conditions, actions: actions.map((a) => a.get()),
        position: Number(position.value) || 0, active: active.checked };
    };
    const dryOut = h("div.dry-run", { "data-testid": "rule-dry-result" });
    const dry = h("button", { "data-testid": "rule-dry-run", text: t("ds.dry_run"), on: { click: async () => {
      error.hide();
      try {
        const res = await post("/desk/rules/dry-run", { rule: body(), limit: 50 });
        replace(dryOut, h("p", { "data-testid": "rule-dry-summary", text: t("ds.dry_summary", { matched: res.matched, tested: res.tested }) }),
          table([t("tickets.conversation"), t("tickets.customer"), t("filter.inbox"), t("filter.status"), t("ds.last_activity"), t("ds.would_match")],
            res.conversations.map((x) => h("tr", { "data-testid": "rule-dry-row", "data-matched": x.matched ? "1" : "0", class: x.matched ? "matched" : "muted" },
              h("td", {}, h("a", { href: "/conversations/" + x.conversation_id, "data-link": "", text: "#" + x.conversation_id })),
              h("td", { text: x.contact || t("contact.anonymous") }), h("td", { text: x.inbox }), h("td", { text: t("status." + x.status) }),
              h("td", { text: when(x.last_activity_at) }),
              h("td", { text: x.matched ? "✓" : x.applicable ? "–" : t("ds.not_applicable") })))));
      } catch (err) {
        error.show(err);
      }
    } } });
    const save = h("button.primary", { "data-testid": "rule-save", text: t("admin.save"), on: { click: async () => {
      error.hide();
      try {
        if (r) await api("PUT", `/desk/rules/${r.id}`, body());
        else await post("/desk/rules", body());
        toast(t("admin.saved"), "ok", 2000);
        reload();
      } catch (err) {
        error.show(err);
      }
    } } });
    replace(panel, h("div.card.desk-form", { "data-testid": "rule-form" }, h("h3", { text: r ? r.name : t("ds.new_rule") }),
      h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.rule_name") }), name),
        h("label.field", {}, h("span", { text: t("ds.when") }), event), h("label.field", {}, h("span", { text: t("ds.position") }), position),
        h("label.field.check", {}, active, h("span", { text: t("admin.active") }))),
      h("fieldset", {}, h("legend", { text: t("ds.if_all") }),
        h("label.field.wide", {}, h("span", { text: t("ds.cond.inbox_ids") }), cond.inbox_ids.el),
        h("label.field.wide", {}, h("span", { text: t("ds.cond.channels") }), cond.channels.el),
        h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.cond.text_contains") }), text),
          h("label.field", {}, h("span", { text: t("ds.cond.contact_tags") }), tags), h("label.field", {}, h("span", { text: t("ds.cond.labels") }), labels)),
        h("div.field.wide", {}, h("span", { text: t("ds.cond.contact_attributes") }), attrs.el),
        h("label.field.wide", {}, h("span", { text: t("ds.cond.priority") }), cond.priority.el),
        h("label.field.wide", {}, h("span", { text: t("ds.cond.status") }), cond.status.el),
        h("label.field.wide", {}, h("span", { text: t("ds.cond.sla_kind") }), cond.sla_kind.el),
        h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.cond.business_hours") }), hours),
          h("label.field", {}, h("span", { text: t("ds.cond.direction") }), direction))),
      h("fieldset", {}, h("legend", { text: t("ds.then") }), actionsBox,
        h("button.link", { "data-testid": "rule-add-action", text: t("ds.add_action"), on: { click: () => addAction({ type: "add_label" }) } })),
      error.el, h("div.form-actions", {}, save, dry, h("button", { text: t("desk.cancel"), on: { click: () => replace(panel) } })), dryOut));
  }
  return h("div", {}, h("p.muted", { text: t("ds.rules_hint") }),
    table([t("ds.rule_name"), t("ds.when"), t("ds.if_all"), t("ds.then"), t("ds.position"), ""], rows),
    h("button.primary", { "data-testid": "rule-new", text: t("ds.new_rule"), on: { click: () => edit(null) } }), panel);
}
