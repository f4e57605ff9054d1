// The segment rule builder: AND/OR groups of conditions on tags, attributes, channel, subscription,
// first/last seen, conversation labels and ticket state -- the rule shape scrm/services/marketing/segments.py compiles.
import { get } from "./api.js";
import { h, replace, select } from "./dom.js";
import { t } from "./i18n.js";
import { label, splitList } from "./marketing.js";

const TEXT_OPS = ["equals", "not_equals", "contains", "in", "is_set", "not_set"];
const TYPE_OPS = {
  text: TEXT_OPS,
  choice: ["equals", "not_equals", "in", "is_set", "not_set"],
  number: ["equals", "not_equals", "in", "gt", "lt", "between", "is_set", "not_set"],
  date: ["equals", "not_equals", "gt", "lt", "between", "is_set", "not_set"],
};
const SEEN_OPS = ["within_days", "older_than_days", "gt", "lt", "between"];
const HAS_OPS = ["has", "not_has"];
const TICKET_STATUSES = ["new", "open", "pending", "solved", "closed"];
const CAMPAIGN_OPS = ["touched", "not_touched", "first_touch", "last_touch"];
const CHURN_OPS = ["at_risk", "not_at_risk", "gt", "lt", "between"];
const NO_VALUE = ["is_set", "not_set", "at_risk", "not_at_risk"];
let campaignList = null; // [[id, name]], loaded once for the campaign condition
const MAX_DEPTH = 3;

export class RuleBuilder {
  /** defs: attribute definitions; channels: channel types; onChange(rules) after every edit. */
  constructor(defs, channels, onChange) {
    this.defs = new Map(defs.map((d) => [d.key, d]));
    this.channels = channels.length ? channels : ["api"];
    this.onChange = onChange;
    this.rules = { op: "and", rules: [] };
    this.el = h("div.rule-builder", { "data-testid": "rule-builder" });
  }

  set(rules) {
    this.rules = rules && typeof rules === "object" && !("field" in rules)
      ? structuredClone(rules) : { op: "and", rules: rules ? [structuredClone(rules)] : [] };
    this.render();
  }

  value() {
    return structuredClone(this.rules);
  }

  changed(rerender = false) {
    if (rerender) this.render();
    this.onChange(this.value());
  }

  render() {
    replace(this.el, this.group(this.rules, null, 0));
  }

  fields() {
    const out = [
      ["tag", t("mk.field.tag")], ["channel", t("mk.field.channel")], ["subscription", t("mk.field.subscription")],
      ["last_seen", t("mk.field.last_seen")], ["first_seen", t("mk.field.first_seen")],
      ["conversation_label", t("mk.field.conversation_label")], ["ticket_status", t("mk.field.ticket_status")],
      ["name", t("mk.field.name")], ["email", t("mk.field.email")], ["phone", t("mk.field.phone")],
      ["language", t("mk.field.language")], ["campaign", t("mk.field.campaign")], ["churn_risk", t("mk.field.churn_risk")],
    ];
    for (const d of this.defs.values()) out.push(["attributes." + d.key, `${t("mk.field.attribute")}: ${d.label} (${d.key})`]);
    return out;
  }

  operators(field) {
    if (field.startsWith("attributes.")) return TYPE_OPS[this.defs.get(field.slice(11))?.type] || TEXT_OPS;
    if (["tag", "channel", "conversation_label", "ticket_status"].includes(field)) return HAS_OPS;
    if (field === "subscription") return ["subscribed", "opted_out"];
    if (field === "campaign") return CAMPAIGN_OPS;
    if (field === "churn_risk") return CHURN_OPS;
    if (field === "first_seen" || field === "last_seen") return SEEN_OPS;
    return TEXT_OPS;
  }

  defaultValue(field, op) {
    if (NO_VALUE.includes(op)) return undefined;
    if (field === "channel" || field === "subscription") return this.channels[0];
    if (field === "ticket_status") return "open";
    if (field === "campaign") return campaignList?.[0]?.[0] ?? "";
    if (field === "churn_risk") return op === "between" ? [] : 60;
    if (op === "within_days" || op === "older_than_days") return 30;
    if (op === "between" || (op === "in" && field.startsWith("attributes."))) return [];
    const def = this.defs.get(field.slice(11));
    if (def?.type === "choice") return def.choices[0] ?? "";
    return "";
  }

  group(node, parent, depth) {
    const op = select([["and", t("mk.rules.all")], ["or", t("mk.rules.any")]], node.op || "and",
      { "data-testid": "group-op", "aria-label": t("mk.rules.combine") });
    op.addEventListener("change", () => {
      node.op = op.value;
      this.changed();
    });
    const children = (node.rules || []).map((child, i) => {
      const remove = () => {
        node.rules.splice(i, 1);
        this.changed(true);
      };
      return "field" in child ? this.condition(child, remove) : this.group(child, remove, depth + 1);
    });
    const add = h("button", { type: "button", "data-testid": "add-condition", text: "+ " + t("mk.rules.add_condition"), on: { click: () => {
      node.rules = node.rules || [];
      node.rules.push({ field: "tag", operator: "has", value: "" });
      this.changed(true);
      const inputs = this.el.querySelectorAll('[data-testid="rule-value"]');
      inputs[inputs.length - 1]?.focus();
    } } });
    const addGroup = depth < MAX_DEPTH - 1 ? h("button", { type: "button", "data-testid": "add-group", text: "+ " + t("mk.rules.add_group"), on: { click: () => {
      node.rules = node.rules || [];
      node.rules.push({ op: "or", rules: [{ field: "tag", operator: "has", value: "" }] });
      this.changed(true);
    } } }) : null;
    const removeGroup = parent ? h("button.link", { type: "button", "aria-label": t("mk.rules.remove_group"), text: "× " + t("mk.rules.remove_group"), on: { click: parent } }) : null;
    return h("div.rule-group", { "data-testid": "rule-group", dataset: { depth: String(depth) } },
      h("div.rule-group-head", {}, h("span", { text: t("mk.rules.match") }), op, h("span", { text: t("mk.rules.of_these") }), removeGroup),
      children.length ? children : h("p.muted", { text: t("mk.rules.everyone") }),
      h("div.rule-add", {}, add, addGroup));
  }

  condition(cond, remove) {
    const fieldSel = select(this.fields(), cond.field, { "data-testid": "rule-field", "aria-label": t("mk.rules.field") });
    if (fieldSel.value !== cond.field) fieldSel.appendChild(h("option", { value: cond.field, text: cond.field, selected: true }));
    fieldSel.addEventListener("change", () => {
      cond.field = fieldSel.value;
      cond.operator = this.operators(cond.field)[0];
      cond.value = this.defaultValue(cond.field, cond.operator);
      this.changed(true);
    });
    const ops = this.operators(cond.field);
    const opSel = select(ops.map((o) => [o, label("mk.op", o)]), cond.operator, { "data-testid": "rule-op", "aria-label": t("mk.rules.operator") });
    opSel.addEventListener("change", () => {
      const before = cond.operator;
      cond.operator = opSel.value;
      const shape = (o) => (NO_VALUE.includes(o) ? "none" : o === "between" || o === "in" ? o : o.endsWith("_days") ? "days" : "one");
      if (shape(before) !== shape(cond.operator)) cond.value = this.defaultValue(cond.field, cond.operator);
      this.changed(true);
    });
    return h("div.rule-row", { "data-testid": "rule-row" }, fieldSel, opSel, this.valueControl(cond),
      h("button.link", { type: "button", "data-testid": "rule-remove", "aria-label": t("mk.rules.remove"), text: "×", on: { click: remove } }));
  }

  valueControl(cond) {
    const { field, operator: op } = cond;
    if (NO_VALUE.includes(op)) return null;
    const def = field.startsWith("attributes.") ? this.defs.get(field.slice(11)) : null;
    const set = (v) => {
      cond.value = v;
      this.changed();
    };
    const input = (type, value, onValue, attrs = {}) => {
      const el = h("input", { type, value: value ?? "", "data-testid": "rule-value", "aria-label": t("mk.rules.value"), ...attrs });
      el.addEventListener("input", () => onValue(el.value));
      return el;
    };
    if (field === "channel" || field === "subscription") {
      const sel = select(this.channels.map((c) => [c, label("mk.channel", c)]), Array.isArray(cond.value) ? cond.value[0] : cond.value,
        { "data-testid": "rule-value", "aria-label": t("mk.rules.value") });
      if (cond.value !== sel.value) cond.value = sel.value;
      sel.addEventListener("change", () => set(sel.value));
      return sel;
    }
    if (field === "campaign") return this.campaignSelect(cond, set);
    if (field === "churn_risk") return this.pairOrOne(cond, op, "number", (v) => (v === "" ? "" : Number(v)), input);
    if (field === "ticket_status") {
      const sel = select(TICKET_STATUSES.map((s) => [s, label("mk.ticket", s)]), Array.isArray(cond.value) ? cond.value[0] : cond.value,
        { "data-testid": "rule-value", "aria-label": t("mk.rules.value") });
      sel.addEventListener("change", () => set(sel.value));
      return sel;
    }
    if (field === "first_seen" || field === "last_seen") {
      if (op.endsWith("_days")) {
        return h("span.rule-value", {}, input("number", cond.value, (v) => set(v === "" ? "" : Number(v)), { min: 0, step: 1, class: "num" }),
          h("span.muted", { text: t("mk.rules.days") }));
      }
      return this.pairOrOne(cond, op, "date", (v) => v, input);
    }
    const type = def?.type || "text";
    if (op === "in") {
      const toValue = (text) => splitList(text).map((s) => (type === "number" ? Number(s) : s));
      return input("text", (Array.isArray(cond.value) ? cond.value : splitList(cond.value)).join(", "), (v) => set(toValue(v)),
        { placeholder: t("mk.rules.comma_list") });
    }
    if (type === "choice") {
      const sel = select(def.choices.map((c) => [c, c]), cond.value, { "data-testid": "rule-value", "aria-label": t("mk.rules.value") });
      if (cond.value !== sel.value) cond.value = sel.value;
      sel.addEventListener("change", () => set(sel.value));
      return sel;
    }
    if (type === "number") return this.pairOrOne(cond, op, "number", (v) => (v === "" ? "" : Number(v)), input);
    if (type === "date") return this.pairOrOne(cond, op, "date", (v) => v, input);
    if (["tag", "conversation_label"].includes(field)) {
      return input("text", (Array.isArray(cond.value) ? cond.value : [cond.value]).filter(Boolean).join(", "), (v) => {
        const list = splitList(v);
        set(list.length > 1 ? list : list[0] || "");
      }, { placeholder: t("mk.rules.tag_hint") });
    }
    return input("text", cond.value, set);
  }

  /** The campaigns by name (ids are what the rule stores); filled when the list arrives. */
  campaignSelect(cond, set) {
    const sel = h("select", { "data-testid": "rule-value", "aria-label": t("mk.rules.value") });
    const fill = () => {
      replace(sel, campaignList.map(([id, name]) => h("option", { value: String(id), text: name, selected: Number(cond.value) === id })));
      if (campaignList.length && !campaignList.some(([id]) => id === Number(cond.value))) set(campaignList[0][0]);
    };
    sel.addEventListener("change", () => set(Number(sel.value)));
    if (campaignList) fill();
    else get("/campaigns").then((r) => {
      campaignList = r.campaigns.map((c) => [c.id, c.name]);
      fill();
    }).catch(() => {});
    return sel;
  }

  /** One input, or two for "between" (value [low, high]). */
  pairOrOne(cond, op, type, conv, input) {
    if (op !== "between") return input(type, cond.value, (v) => {
      cond.value = conv(v);
      this.changed();
    });
    const pair = Array.isArray(cond.value) && cond.value.length === 2 ? cond.value : ["", ""];
    cond.value = pair;
    const at = (i) => (v) => {
      pair[i] = conv(v);
      this.changed();
    };
    return h("span.rule-value", {}, input(type, pair[0], at(0)), h("span.muted", { text: t("mk.rules.and") }), input(type, pair[1], at(1)));
  }
}
