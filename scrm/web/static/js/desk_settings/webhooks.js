// Outgoing webhooks: endpoint, events, active; the signing secret shown once; the delivery log with
// redelivery; and a "send test" that reports the endpoint's answer.
import { api, del, get, post } from "../api.js";
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";
import { checkbox, errorLine, table, textInput, when } from "../desk_common.js";

export async function render(reload) {
  const data = await get("/desk/webhooks");
  const panel = h("div");
  const rows = data.webhooks.map((w) => {
    const result = h("span.test-result", { "data-testid": "hook-test-result" });
    return h("tr", { "data-testid": "hook-row", class: w.active ? "" : "inactive" },
      h("td", {}, h("strong", { text: w.name })), h("td", {}, h("code", { text: w.url })), h("td", { text: w.events.join(", ") }),
      h("td", {}, h("button", { "data-testid": "hook-test", text: t("ds.send_test"), on: { click: async (ev) => {
        ev.target.disabled = true;
        result.textContent = t("loading");
        try {
          const { delivery: d } = await post(`/desk/webhooks/${w.id}/test`);
          const good = d.status === "delivered";
          result.textContent = (good ? "✓ " : "✗ ") + (good ? `HTTP ${d.response_status}` : d.last_error || d.status);
          result.className = "test-result " + (good ? "ok" : "bad");
        } catch (err) {
          result.textContent = "✗ " + err.message;
          result.className = "test-result bad";
        } finally {
          ev.target.disabled = false;
        }
      } } }), " ", result),
      h("td", {}, h("button", { "data-testid": "hook-log", text: t("ds.delivery_log"), on: { click: () => log(w) } }), " ",
        h("button", { text: t("ds.edit"), on: { click: () => edit(w) } }), " ",
        h("button.danger", { text: t("admin.delete"), on: { click: async () => {
          if (!confirm(t("admin.confirm_delete", { name: w.name }))) return;
          try {
            await del(`/desk/webhooks/${w.id}`);
            reload();
          } catch (err) {
            toast(err.message);
          }
        } } })));
  });
  async function log(w) {
    const res = await get(`/desk/webhooks/${w.id}/deliveries?limit=50`);
    replace(panel, h("div.card", { "data-testid": "hook-deliveries" }, h("h3", { text: t("ds.delivery_log_of", { name: w.name }) }),
      table(["#", t("ds.event"), t("ds.status"), t("ds.attempts"), "HTTP", t("ds.error"), t("ds.created"), ""],
        res.deliveries.map((d) => h("tr", { "data-testid": "hook-delivery", "data-status": d.status },
          h("td", { text: String(d.id) }), h("td", { text: d.event }), h("td", {}, h("span.chip", { class: "st-" + d.status, text: d.status })),
          h("td", { text: String(d.attempts) }), h("td", { text: d.response_status ?? "" }), h("td.muted", { text: d.last_error || "" }),
          h("td", { text: when(d.created_at) }),
          h("td", {}, h("button.link", { text: t("ds.redeliver"), on: { click: async () => {
            try {
              await post(`/desk/webhooks/deliveries/${d.id}/redeliver`);
              setTimeout(() => log(w), 800);
            } catch (err) {
              toast(err.message);
            }
          } } })))))));
  }
  function edit(w) {
    const error = errorLine("hook-error");
    const name = textInput(w?.name, { "data-testid": "hook-name" });
    const url = textInput(w?.url, { "data-testid": "hook-url", placeholder: "https://" });
    const chosen = new Set(w?.events || []);
    const boxes = ["*", ...data.events].map((e) => {
      const box = checkbox(chosen.has(e), { "data-testid": "hook-event", "data-event": e });
      box.addEventListener("change", () => (box.checked ? chosen.add(e) : chosen.delete(e)));
      return h("label.member", {}, box, " ", h("code", { text: e === "*" ? t("ds.all_events") : e }));
    });
    const active = checkbox(w ? w.active : true, { "data-testid": "hook-active" });
    const save = h("button.primary", { "data-testid": "hook-save", text: t("admin.save"), on: { click: async () => {
      error.hide();
      const body = { name: name.value.trim(), url: url.value.trim(), events: [...chosen], active: active.checked };
      try {
        if (w) {
          await api("PUT", `/desk/webhooks/${w.id}`, body);
          reload();
        } else {
          const res = await post("/desk/webhooks", body);
          replace(panel, h("div.card", { "data-testid": "hook-created" }, h("p.warn", { text: t("ds.secret_once") }),
            h("code.copy", { "data-testid": "hook-secret", text: res.webhook.secret }),
            h("p", {}, h("button", { text: t("desk.close"), on: { click: reload } }))));
        }
      } catch (err) {
        error.show(err);
      }
    } } });
    replace(panel, h("div.card.desk-form", { "data-testid": "hook-form" }, h("h3", { text: w ? w.name : t("ds.new_hook") }),
      h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.hook_name") }), name), h("label.field.wide", {}, h("span", { text: "URL" }), url)),
      h("fieldset", {}, h("legend", { text: t("ds.events") }), h("div.members", {}, boxes)),
      h("label.field.check", {}, active, h("span", { text: t("admin.active") })),
      error.el, h("div.form-actions", {}, save, h("button", { text: t("desk.cancel"), on: { click: () => replace(panel) } }))));
  }
  return h("div", {}, h("p.muted", { text: t("ds.hooks_hint") }),
    table([t("ds.hook_name"), "URL", t("ds.events"), t("ds.test"), ""], rows),
    h("button.primary", { "data-testid": "hook-new", text: t("ds.new_hook"), on: { click: () => edit(null) } }), panel);
}
