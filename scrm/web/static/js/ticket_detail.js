// One ticket: status, priority, assignee and team changes; SLA clocks in business time; the customer and
// the linked conversation; internal comments; merging a duplicate into another ticket.
import { api, get, post } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { navigate } from "./router.js";
import { toast } from "./toast.js";
import { agentName, agentOptions, deskFrame, isAdmin, PRIORITIES, selectOf, slaBadge, teams, tr } from "./desk_common.js";

const TRANSITIONS = { new: ["open", "pending", "solved", "closed"], open: ["pending", "solved", "closed"],
  pending: ["open", "solved", "closed"], solved: ["open", "closed"], closed: [] };

function minutesText(m) {
  if (m === null || m === undefined) return "";
  const abs = Math.abs(m);
  const text = abs >= 120 ? t("tickets.hours", { n: (abs / 60).toFixed(1) }) : t("tickets.minutes", { n: Math.round(abs) });
  return m >= 0 ? t("tickets.left", { time: text }) : t("tickets.overdue", { time: text });
}

export function ticketDetail(id) {
  const el = h("div.ticket-detail", {}, h("p.loading", { text: t("loading") }));
  let ticket = null;

  async function load() {
    try {
      const [tk, comments, teamList] = await Promise.all([get(`/tickets/${id}`), get(`/desk/tickets/${id}/comments`), teams()]);
      ticket = tk;
      render(tk, comments.comments, teamList);
    } catch (err) {
      replace(el, h("p.page-error", { role: "alert", "data-testid": "page-error", text: err.message }));
    }
  }

  async function change(fn) {
    try {
      await fn();
      await load();
    } catch (err) {
      toast(err.message);
      await load();
    }
  }

  function render(tk, comments, teamList) {
    const closed = tk.status === "closed";
    const status = selectOf([[tk.status, tr("tickets.status", tk.status)], ...TRANSITIONS[tk.status].map((s) => [s, tr("tickets.status", s)])],
      tk.status, { "data-testid": "td-status", "aria-label": t("tickets.status_label"), disabled: closed });
    status.addEventListener("change", () => change(() => post(`/desk/tickets/${id}/status`, { status: status.value })));
    const priority = selectOf(PRIORITIES.map((p) => [p, t("priority." + p)]), tk.priority, { "data-testid": "td-priority", disabled: closed });
    priority.addEventListener("change", () => change(() => api("PATCH", `/tickets/${id}`, { priority: priority.value })));
    const assignee = selectOf(agentOptions(t("list.unassigned")), tk.assignee_id ?? "", { "data-testid": "td-assignee", disabled: closed });
    assignee.addEventListener("change", () => change(() => api("PATCH", `/tickets/${id}`, { assignee_id: assignee.value ? Number(assignee.value) : null })));
    const team = selectOf([["", "–"], ...teamList.map((x) => [x.id, x.name])], tk.team_id ?? "", { "data-testid": "td-team", disabled: closed });
    team.addEventListener("change", () => change(() => api("PATCH", `/tickets/${id}`, { team_id: team.value ? Number(team.value) : null })));
    const subject = h("input.subject-edit", { value: tk.subject, "data-testid": "td-subject", disabled: closed, "aria-label": t("tickets.subject") });
    subject.addEventListener("change", () => change(() => api("PATCH", `/tickets/${id}`, { subject: subject.value })));

    const clocks = tk.sla.clocks.length ? h("ul.sla-clocks", { "data-testid": "sla-clocks" }, tk.sla.clocks.map((c) =>
      h("li", { class: c.breached ? "breached" : c.done_at ? "done" : c.warned ? "warned" : "" },
        h("strong", { text: tr("notif.sla", c.kind) }), " ",
        h("span", { text: t("tickets.due", { time: fmtTime(c.due_at, { full: true }) }) }), " ",
        c.done_at ? h("span.muted", { text: t("tickets.done_at", { time: fmtTime(c.done_at, { full: true }) }) })
          : h("span", { "data-testid": "sla-left", text: minutesText(c.business_minutes_left) }),
        c.breached ? h("span.chip.bad", { text: t("tickets.sla_breached") }) : null)))
      : h("p.muted", { text: t("tickets.no_sla") });
    const contact = tk.contact;
    const conv = tk.conversation;
    const commentList = h("ul.comments", { "data-testid": "comments" }, comments.length ? comments.map((c) =>
      h("li.comment", { "data-testid": "comment" }, h("div.meta", {}, h("strong", { text: agentName(c.agent_id) || t("sender.system") }),
        " ", h("time", { text: fmtTime(c.created_at, { full: true }) })), h("div.text", { text: c.text })))
      : h("li.empty", { text: t("tickets.no_comments") }));
    const commentInput = h("textarea", { rows: 3, placeholder: t("tickets.comment_placeholder"), "data-testid": "comment-input" });
    const commentBtn = h("button.primary", { "data-testid": "comment-add", text: t("tickets.comment_add"), on: { click: () => {
      if (!commentInput.value.trim()) return;
      change(() => post(`/desk/tickets/${id}/comments`, { text: commentInput.value }));
    } } });
    const mergeTarget = selectOf([["", t("tickets.merge_pick")], ...tk.duplicates.map((d) => [d.id, `${d.display_number} ${d.subject}`])], "",
      { "data-testid": "merge-target" });
    const mergeBtn = h("button", { "data-testid": "merge", text: t("tickets.merge"), disabled: closed, on: { click: () => {
      if (!mergeTarget.value) return toast(t("tickets.merge_pick"));
      if (!confirm(t("tickets.merge_confirm", { from: tk.display_number }))) return;
      post(`/tickets/${id}/merge`, { into_id: Number(mergeTarget.value) }).then((res) => {
        toast(t("tickets.merged", { into: res.ticket.display_number }), "ok", 3000);
        navigate("/tickets/" + res.ticket.id);
      }).catch((err) => toast(err.message));
    } } });

    const head = [h("span.chip", { class: "st-" + tk.status, "data-testid": "td-status-chip", text: tr("tickets.status", tk.status) }), " ",
      h("a.button", { href: "/tickets", "data-link": "", text: t("tickets.back") })];
    replace(el, deskFrame("ticket", `${tk.display_number}`, head,
      h("div.ticket-grid", {},
        h("section.ticket-main", {},
          subject,
          tk.merged_into_id ? h("p.notice", { "data-testid": "merged-note", text: t("tickets.merged_into", { id: tk.merged_into_id }) }) : null,
          h("div.ticket-controls", {},
            h("label.field", {}, h("span", { text: t("tickets.status_label") }), status),
            h("label.field", {}, h("span", { text: t("thread.priority") }), priority),
            h("label.field", {}, h("span", { text: t("tickets.assignee") }), assignee),
            h("label.field", {}, h("span", { text: t("tickets.team") }), team)),
          tk.description ? h("div.description", {}, h("h3", { text: t("tickets.description") }), h("div.text", { "data-testid": "td-description", text: tk.description })) : null,
          h("h3", { text: t("tickets.comments") }), commentList,
          h("div.comment-form", {}, commentInput, commentBtn)),
        h("aside.ticket-side", {},
          h("section.card", {}, h("h3", {}, "SLA ", slaBadge({ state: tk.sla.state })),
            tk.sla.policy ? h("p.muted", { text: t(tk.sla.business_hours ? "tickets.sla_business" : "tickets.sla_24x7", { name: tk.sla.policy.name }) }) : null,
            clocks),
          h("section.card", { "data-testid": "td-customer" }, h("h3", { text: t("tickets.customer") }),
            contact ? [h("strong", { text: contact.name || t("contact.anonymous") }),
              h("div.muted", { text: [contact.email, contact.phone].filter(Boolean).join(" · ") }),
              isAdmin() ? h("a", { href: `/contacts/${contact.id}`, "data-link": "", text: t("tickets.profile") }) : null] : null),
          h("section.card", { "data-testid": "td-conversation" }, h("h3", { text: t("tickets.conversation") }),
            conv ? [h("a", { href: "/conversations/" + conv.id, "data-link": "", "data-testid": "td-conversation-link",
              text: t("tickets.open_conversation", { id: conv.id }) }),
            h("div", {}, h("span.chip", { text: t("status." + conv.status) }), " ", h("span.muted", { text: conv.last_message_preview || "" }))]
              : h("p.muted", { text: t("tickets.no_conversation") })),
          h("section.card", {}, h("h3", { text: t("tickets.merge_title") }), h("p.muted", { text: t("tickets.merge_hint") }),
            mergeTarget, " ", mergeBtn),
          h("section.card.muted", {}, h("div", { text: t("tickets.created_at", { time: fmtTime(tk.created_at, { full: true }) }) }),
            h("div", { text: t("tickets.updated_at", { time: fmtTime(tk.updated_at, { full: true }) }) }))))));
  }
  load();
  return { el };
}
