// English strings of inbox membership (admin). {x} placeholders are plain text.
export const enAccess = {
  "members.open": "Members", "members.title": "Who sees {name}",
  "members.hint": "Agents see only the inboxes they are members of (directly or through a team); admins see all. An inbox without any member is visible to every agent.",
  "members.open_to_all": "No members: every agent sees this inbox.",
  "members.restricted": "Only admins, {agents} agent(s) and the members of {teams} team(s) see this inbox.",
  "members.agents": "Agents", "members.teams": "Teams", "members.no_agents": "No agents yet.", "members.no_teams": "No teams yet.",
  "members.save": "Save members", "members.saved": "Members saved.",
  "members.saved_unassigned": "Members saved; {n} open conversation(s) went back to the queue (their assignee no longer sees this inbox).",
};
