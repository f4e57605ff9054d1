// Teams: name, the inbox they serve (or every inbox), members, and auto-assignment (round robin among
// online members, each up to a capacity of open conversations).
import { api, del, get, post } from "../api.js";
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";
import { agentName, agentOptions, checkbox, errorLine, numberInput, selectOf, table, textInput } from "../desk_common.js";

export async function render(reload) {
  const [data, inboxes] = await Promise.all([get("/desk/teams"), get("/inboxes")]);
  const inboxName = (id) => inboxes.items.find((i) => i.id === id)?.name || `#${id}`;
  const editor = h("div");
  const rows = data.teams.map((tm) => h("tr", { "data-testid": "team-row" },
    h("td", {}, h("strong", { text: tm.name })), h("td", { text: tm.inbox_id ? inboxName(tm.inbox_id) : t("ds.all_inboxes") }),
    h("td", { text: tm.members.map(agentName).join(", ") || "–" }),
    h("td", { text: tm.auto_assign ? t("ds.round_robin_cap", { n: tm.max_open_per_agent }) : t("ds.manual") }),
    h("td", {}, h("button", { text: t("ds.edit"), on: { click: () => edit(tm) } }), " ",
      h("button.danger", { text: t("admin.delete"), on: { click: async () => {
        if (!confirm(t("admin.confirm_delete", { name: tm.name }))) return;
        try {
          await del(`/desk/teams/${tm.id}`);
          reload();
        } catch (err) {
          toast(err.message);
        }
      } } }))));
  function edit(tm) {
    const error = errorLine("team-error");
    const name = textInput(tm?.name, { "data-testid": "team-name", required: true });
    const inbox = selectOf([["", t("ds.all_inboxes")], ...inboxes.items.map((i) => [i.id, i.name])], tm?.inbox_id ?? "", { "data-testid": "team-inbox" });
    const auto = checkbox(tm ? tm.auto_assign : true, { "data-testid": "team-auto" });
    const cap = numberInput(tm?.max_open_per_agent ?? 10, { min: 1, max: 1000, "data-testid": "team-capacity" });
    const offline = checkbox(tm?.reassign_on_offline, { "data-testid": "team-offline" });
    const members = new Set(tm?.members || []);
    const memberBoxes = agentOptions().map(([id, label]) => {
      const box = checkbox(members.has(id), { "data-testid": "team-member", "data-agent": id });
      box.addEventListener("change", () => (box.checked ? members.add(id) : members.delete(id)));
      return h("label.member", {}, box, " ", label);
    });
    const save = h("button.primary", { "data-testid": "team-save", text: t("admin.save"), on: { click: async () => {
      error.hide();
      const body = { name: name.value.trim(), inbox_id: inbox.value ? Number(inbox.value) : null, auto_assign: auto.checked,
        max_open_per_agent: Number(cap.value), reassign_on_offline: offline.checked, members: [...members] };
      try {
        if (tm) await api("PUT", `/desk/teams/${tm.id}`, body);
        else await post("/desk/teams", body);
        toast(t("admin.saved"), "ok", 2000);
        reload();
      } catch (err) {
        error.show(err);
      }
    } } });
    replace(editor, h("div.card.desk-form", { "data-testid": "team-form" },
      h("h3", { text: tm ? t("ds.edit_team", { name: tm.name }) : t("ds.new_team") }),
      h("div.form-row", {}, h("label.field", {}, h("span", { text: t("ds.team_name") }), name),
        h("label.field", {}, h("span", { text: t("ds.serves") }), inbox)),
      h("fieldset", {}, h("legend", { text: t("ds.members") }), h("div.members", {}, memberBoxes)),
      h("fieldset", {}, h("legend", { text: t("ds.auto_assign") }),
        h("label.field.check", {}, auto, h("span", { text: t("ds.auto_assign_on") })),
        h("label.field", {}, h("span", { text: t("ds.capacity") }), cap, h("small.muted", { text: t("ds.capacity_hint") })),
        h("label.field.check", {}, offline, h("span", { text: t("ds.reassign_offline") }))),
      error.el, h("div.form-actions", {}, save, h("button", { text: t("desk.cancel"), on: { click: () => replace(editor) } }))));
  }
  return h("div", {}, h("p.muted", { text: t("ds.teams_hint") }),
    table([t("ds.team_name"), t("ds.serves"), t("ds.members"), t("ds.auto_assign"), ""], rows, { "data-testid": "teams-table" }),
    h("button.primary", { "data-testid": "team-new", text: t("ds.new_team"), on: { click: () => edit(null) } }), editor);
}
