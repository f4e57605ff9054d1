// 收件箱成员（管理员）的中文文案。{x} 占位符按纯文本填入。
export const zhAccess = {
  "members.open": "成员", "members.title": "谁能看到 {name}",
  "members.hint": "客服只能看到自己所属（直接或通过团队）的收件箱；管理员可以看到全部。没有任何成员的收件箱对所有客服可见。",
  "members.open_to_all": "尚无成员：所有客服都能看到此收件箱。",
  "members.restricted": "只有管理员、{agents} 位客服和 {teams} 个团队的成员能看到此收件箱。",
  "members.agents": "客服", "members.teams": "团队", "members.no_agents": "还没有客服。", "members.no_teams": "还没有团队。",
  "members.save": "保存成员", "members.saved": "成员已保存。",
  "members.saved_unassigned": "成员已保存；{n} 个未解决的会话已退回队列（其负责人已看不到此收件箱）。",
};
