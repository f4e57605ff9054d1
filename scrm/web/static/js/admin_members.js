// Admin: which agents and teams see an inbox. No members at all: every agent sees it (the default).
import { api, get } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

/** The "Members" button of an inbox row; it opens the membership editor into `box`. */
export function membersButton(inbox, box) {
  return h("button", { text: t("members.open"), "data-testid": "members-open", on: { click: () => membersPanel(inbox, box) } });
}

function checkboxes(items, chosen, name, testid) {
  return h("div.member-list", { "data-testid": testid }, items.map((item) => h("label.check", {},
    h("input", { type: "checkbox", name, value: String(item.id), checked: chosen.has(item.id) }), " ", h("span", { text: item.label }))));
}

export async function membersPanel(inbox, box) {
  const [members, agents, teams] = await Promise.all([
    get(`/inboxes/${inbox.id}/members`), get("/agents"), get("/desk/teams")]);
  const agentItems = agents.items.filter((a) => a.active && a.role === "agent")
    .map((a) => ({ id: a.id, label: `${a.display_name} (${a.login})` }));
  const teamItems = (teams.teams || []).map((tm) => ({ id: tm.id, label: tm.name }));
  const status = h("p.members-status", { "data-testid": "members-status" });
  const showStatus = (m) => {
    status.textContent = m.open_to_all ? t("members.open_to_all") : t("members.restricted", { agents: m.agent_ids.length, teams: m.team_ids.length });
  };
  showStatus(members);
  const agentBox = checkboxes(agentItems, new Set(members.agent_ids), "agent", "members-agents");
  const teamBox = checkboxes(teamItems, new Set(members.team_ids), "team", "members-teams");
  const picked = (el) => [...el.querySelectorAll("input:checked")].map((i) => Number(i.value));
  const save = h("button.primary", { type: "button", text: t("members.save"), "data-testid": "members-save", on: { click: async () => {
    try {
      const saved = await api("PUT", `/inboxes/${inbox.id}/members`, { agent_ids: picked(agentBox), team_ids: picked(teamBox) });
      showStatus(saved);
      const moved = saved.unassigned_conversations.length;
      toast(moved ? t("members.saved_unassigned", { n: moved }) : t("members.saved"), "ok", 3000);
    } catch (err) {
      toast(err.message);
    }
  } } });
  replace(box, h("section.members-panel", { "data-testid": "members-panel" },
    h("h3", { text: t("members.title", { name: inbox.name }) }),
    h("p.members-hint", { text: t("members.hint") }), status,
    h("h4", { text: t("members.agents") }), agentItems.length ? agentBox : h("p", { text: t("members.no_agents") }),
    h("h4", { text: t("members.teams") }), teamItems.length ? teamBox : h("p", { text: t("members.no_teams") }),
    save));
}
