// Admin pages: agents (invite, role, deactivate), inboxes (create per channel, webhook URL, test), canned responses,
// unroutable mail (admin_mail.js).
import { del, get, patch, post } from "./api.js";
import { h, replace, select } from "./dom.js";
import { t } from "./i18n.js";
import { structuredValue, wecomActions, wecomHelp } from "./admin_wecom.js";
import { webchatButton } from "./admin_webchat.js";
import { membersButton } from "./admin_members.js";
import { channelIcon } from "./icons.js";
import { isAdmin, state } from "./state.js";
import { toast } from "./toast.js";
import { unroutable } from "./admin_mail.js";

const TABS = ["agents", "inboxes", "canned", "unroutable"];

export function adminPage(path) {
  const body = h("div.admin-body");
  const tabs = h("nav.subnav", {}, TABS.map((tab) => h("a", { href: "/admin/" + tab, "data-link": "", "data-tab": tab, text: t("admin." + tab) })));
  const el = h("div.admin", {}, h("h1", { text: t("nav.admin") }), tabs, body);

  function show(p) {
    const tab = TABS.find((x) => p === "/admin/" + x) || "agents";
    for (const a of tabs.children) a.classList.toggle("active", a.dataset.tab === tab);
    if (!isAdmin()) {
      replace(body, h("p.forbidden", { role: "alert", "data-testid": "forbidden", text: t("admin.forbidden") }));
      return;
    }
    replace(body, h("p.loading", { text: t("loading") }));
    ({ agents, inboxes, canned, unroutable })[tab](body).catch((err) => {
      replace(body, h("p.forbidden", { role: "alert", "data-testid": err.status === 403 ? "forbidden" : "admin-error", text: err.message }));
    });
  }
  show(path);
  return { name: "admin", el, route: show };
}

function form(fields, submitLabel, onSubmit, testid) {
  const error = h("p.error", { role: "alert", hidden: true });
  const el = h("form.inline-form", { "data-testid": testid }, fields, h("button.primary", { type: "submit", text: submitLabel }), error);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    try {
      await onSubmit();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  return el;
}

const input = (name, label, attrs = {}) => h("label.field", {}, h("span", { text: label }), h("input", { name, ...attrs }));

// ---- agents ---------------------------------------------------------------

async function agents(body) {
  const data = await get("/agents");
  const roles = ["admin", "agent", "marketer"].map((r) => [r, t("role." + r)]);
  const rows = data.items.map((a) => {
    const role = select(roles, a.role, { "aria-label": t("admin.role") });
    role.addEventListener("change", async () => {
      try {
        await patch(`/agents/${a.id}`, { role: role.value });
        toast(t("admin.saved"), "ok", 2000);
      } catch (err) {
        toast(err.message);
        role.value = a.role;
      }
    });
    const toggle = h("button", { text: a.active ? t("admin.deactivate") : t("admin.reactivate"), on: { click: async () => {
      try {
        await patch(`/agents/${a.id}`, { active: !a.active });
        agents(body);
      } catch (err) {
        toast(err.message);
      }
    } } });
    return h("tr", { class: a.active ? "" : "inactive" }, h("td", { text: a.display_name }), h("td", {}, h("code", { text: a.login })),
      h("td", { text: a.email || "" }), h("td", {}, role), h("td", { text: t("availability." + a.availability) }), h("td", {}, toggle));
  });
  const f = h("div");
  const invite = form([input("login", t("admin.login"), { required: true }), input("display_name", t("admin.display_name")),
    input("email", t("admin.email"), { type: "email" }), input("password", t("admin.password"), { type: "password", required: true, minlength: 8 }),
    h("label.field", {}, h("span", { text: t("admin.role") }), select(roles, "agent", { name: "role" }))],
  t("admin.invite"), async () => {
    const v = Object.fromEntries(new FormData(invite));
    await post("/agents", { login: v.login, password: v.password, role: v.role, display_name: v.display_name || null, email: v.email || null });
    toast(t("admin.invited", { login: v.login }), "ok", 3000);
    agents(body);
  }, "invite-form");
  f.append(invite);
  replace(body, h("h2", { text: t("admin.agents") }),
    h("table.grid", {}, h("tr", {}, ["admin.display_name", "admin.login", "admin.email", "admin.role", "header.availability", ""].map((k) => h("th", { text: k ? t(k) : "" }))), rows),
    h("h3", { text: t("admin.invite") }), f);
}

// ---- inboxes --------------------------------------------------------------

function webhookUrl(i) {
  if (i.channel_type === "web") return location.origin + "/chat/" + i.id; // no webhook: the chat page
  return i.webhook_url || location.origin + i.webhook_path;
}

async function inboxes(body) {
  const [data, types] = await Promise.all([get("/inboxes"), get("/channel_types")]);
  const wecomPanel = h("div.wecom-panel", { "data-testid": "wecom-panel" });
  const panel = h("div.webchat-box");
  const rows = data.items.map((i) => {
    const result = h("span.test-result", { "data-testid": "test-result" });
    const test = h("button", { text: t("admin.test"), on: { click: async () => {
      result.textContent = t("loading");
      try {
        const r = await post(`/inboxes/${i.id}/test`);
        result.textContent = (r.ok ? "✓ " : "✗ ") + (r.message || "");
        result.className = "test-result " + (r.ok ? "ok" : "bad");
      } catch (err) {
        result.textContent = "✗ " + err.message;
        result.className = "test-result bad";
      }
    } } });
    return h("tr", { class: i.active ? "" : "inactive" }, h("td", {}, channelIcon(i.channel_type), " ", h("span", { text: i.name })),
      h("td", { text: i.channel_type }), h("td", {}, h("code.copy", { "data-testid": "webhook-url", text: webhookUrl(i) })),
      h("td", { text: i.active ? t("admin.active") : t("admin.disabled") }),
      h("td", {}, test, " ", membersButton(i, panel), " ", i.channel_type === "web" ? webchatButton(i, panel) : null, " ", result,
        wecomActions(i, wecomPanel)));
  });
  const typeSel = select(types.items.map((c) => [c.channel_type, `${c.display_name} (${c.channel_type})`]), types.items[0]?.channel_type,
    { name: "channel_type", "data-testid": "channel-type" });
  const fieldsBox = h("div.channel-fields");
  const created = h("div.created");  // gets its test id once it shows a created inbox
  function renderFields() {
    const spec = types.items.find((c) => c.channel_type === typeSel.value);
    const later = spec?.channel_type === "web"; // generated secrets; set up under "Widget" once created
    replace(fieldsBox, spec && !later ? [
      wecomHelp(spec.channel_type),
      ...spec.settings.map((f) => specField("settings", f)),
      ...spec.secrets.map((f) => specField("secrets", f)),
    ] : []);
  }
  typeSel.addEventListener("change", renderFields);
  renderFields();
  const createForm = form([input("name", t("admin.inbox_name"), { required: true }),
    h("label.field", {}, h("span", { text: t("admin.channel") }), typeSel), fieldsBox], t("admin.create_inbox"), async () => {
    const settings = {};
    const secrets = {};
    for (const el of fieldsBox.querySelectorAll("[data-group]")) {
      let value = el.type === "checkbox" ? el.checked : el.value.trim();
      if (value === "" ) continue;
      if (el.dataset.kind === "integer" || el.dataset.kind === "number") value = Number(value);
      if (el.dataset.kind === "object" || el.dataset.kind === "array") {
        try {
          value = structuredValue(el);
        } catch {
          throw new Error(`${el.name}: ${t("wecom.json_hint")}`);
        }
      }
      (el.dataset.group === "settings" ? settings : secrets)[el.name] = value;
    }
    const inbox = await post("/inboxes", { name: createForm.elements.name.value.trim(), channel_type: typeSel.value, settings, secrets });
    created.dataset.testid = "inbox-created";
    replace(created, h("h4", { text: t("admin.inbox_ready", { name: inbox.name }) }),
      h("p", { text: t("admin.paste_webhook") }), h("code.copy", { text: webhookUrl(inbox) }),
      Object.keys(inbox.secrets || {}).length ? h("p.warn", { text: t("admin.secrets_once") }) : null,
      Object.entries(inbox.secrets || {}).map(([k, v]) => h("div", {}, h("strong", { text: k + ": " }), h("code", { text: String(v) }))));
    inboxes(body).then(() => body.append(created));
  }, "inbox-form");
  replace(body, h("h2", { text: t("admin.inboxes") }),
    h("table.grid", {}, h("tr", {}, [t("admin.inbox_name"), t("admin.channel"), t("admin.webhook"), "", ""].map((x) => h("th", { text: x }))), rows),
    wecomPanel, panel, h("h3", { text: t("admin.create_inbox") }), createForm, created);
}

function specField(group, f) {
  // Secrets may be generated by the server (webhook tokens): it, not the browser, says what is missing.
  const attrs = { name: f.name, "data-group": group, "data-kind": f.type, required: f.required && group === "settings" };
  let control;
  if (f.enum) control = select([["", ""], ...f.enum.map((v) => [v, v])], f.default ?? "", attrs);
  else if (f.type === "boolean") control = h("input", { type: "checkbox", checked: Boolean(f.default), ...attrs });
  else if (f.type === "object" || f.type === "array") control = h("input", { type: "text", autocomplete: "off", ...attrs,
    placeholder: t(f.type === "object" ? "wecom.json_hint" : "wecom.list_hint") });
  else control = h("input", { type: group === "secrets" ? "password" : f.type === "integer" || f.type === "number" ? "number" : "text",
    step: f.type === "number" ? "any" : undefined, placeholder: f.default != null ? String(f.default) : "", autocomplete: "off", ...attrs });
  return h("label.field", {}, h("span", { text: `${f.name}${f.required ? " *" : ""}` }), control,
    f.description && f.description !== f.name ? h("small.muted", { text: f.description }) : null);
}

// ---- canned responses -----------------------------------------------------

async function canned(body) {
  const data = await get("/canned_responses?limit=200");
  const rows = data.items.map((c) => {
    const title = h("input", { value: c.title, "aria-label": t("admin.title") });
    const text = h("textarea", { rows: 2, "aria-label": t("admin.text") });
    text.value = c.text;
    const save = h("button", { text: t("admin.save"), on: { click: async () => {
      try {
        await patch(`/canned_responses/${c.id}`, { title: title.value, text: text.value });
        toast(t("admin.saved"), "ok", 2000);
      } catch (err) {
        toast(err.message);
      }
    } } });
    const remove = h("button.danger", { text: t("admin.delete"), on: { click: async () => {
      if (!confirm(t("admin.confirm_delete", { name: "/" + c.shortcut }))) return;
      try {
        await del(`/canned_responses/${c.id}`);
        canned(body);
      } catch (err) {
        toast(err.message);
      }
    } } });
    return h("tr", {}, h("td", {}, h("code", { text: "/" + c.shortcut })), h("td", {}, title), h("td", {}, text), h("td", {}, save, remove));
  });
  const createForm = form([input("shortcut", t("admin.shortcut"), { required: true, pattern: "[^\\s/]+" }),
    input("title", t("admin.title"), { required: true }),
    h("label.field.wide", {}, h("span", { text: t("admin.text") }), h("textarea", { name: "text", rows: 3, required: true }))],
  t("admin.add_canned"), async () => {
    const v = Object.fromEntries(new FormData(createForm));
    await post("/canned_responses", { shortcut: v.shortcut.trim(), title: v.title.trim(), text: v.text });
    canned(body);
  }, "canned-form");
  replace(body, h("h2", { text: t("admin.canned") }), h("p.muted", { text: t("admin.canned_hint") }),
    h("table.grid", {}, rows), h("h3", { text: t("admin.add_canned") }), createForm);
}
