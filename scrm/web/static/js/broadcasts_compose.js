// The broadcast composer: audience (saved segment, live count), channels in priority order, the message
// with {{variables | fallbacks}}, a per-channel preview for a sample contact, a test send, then send now or
// schedule. Every action saves the draft first, so the server validates variables and channels once.
import { api, del, get, post } from "./api.js";
import { h, replace, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { channelIcon } from "./icons.js";
import { navigate } from "./router.js";
import { attributeDefinitions, busy, channelTag, errorLine, fieldBox, fmtNum, frame, label, statusChip } from "./marketing.js";
import { toast } from "./toast.js";
import { wechatSection } from "./broadcasts_wechat.js";

/** `b`: an existing draft/scheduled broadcast or null; `reopen()` shows the broadcast's current view. */
export async function composer(b, reopen) {
  const [{ segments }, { items: allInboxes }, defs] = await Promise.all([get("/segments"), get("/inboxes"), attributeDefinitions()]);
  const inboxes = allInboxes.filter((i) => i.active || (b?.inbox_ids || []).includes(i.id));
  let id = b?.id ?? null;
  const wanted = Number(new URLSearchParams(location.search).get("segment")) || null;
  const error = errorLine("compose-error");

  const name = h("input", { value: b?.name || "", maxlength: 120, required: true, "data-testid": "bc-name" });
  const segment = select([["", t("mk.compose.pick_segment")], ...segments.map((s) => [s.id, s.name])], b?.segment_id ?? wanted ?? "",
    { "data-testid": "bc-segment", "aria-label": t("mk.broadcasts.audience") });
  const audience = h("p.muted", { "data-testid": "bc-audience" });
  const sampleSel = select([["", t("mk.compose.no_contact")]], "", { "data-testid": "bc-sample", "aria-label": t("mk.compose.sample") });

  async function loadAudience() {
    replace(sampleSel, h("option", { value: "", text: t("mk.compose.no_contact") }));
    if (!segment.value) {
      audience.textContent = segments.length ? "" : t("mk.compose.no_segments");
      delete audience.dataset.count;
      return;
    }
    audience.textContent = t("loading");
    try {
      const live = await get(`/segments/${segment.value}`);
      if (live.error) throw new Error(live.error);
      audience.textContent = t("mk.compose.audience_count", { n: fmtNum(live.count) });
      audience.dataset.count = String(live.count);
      for (const c of live.sample) sampleSel.append(h("option", { value: c.id, text: `${c.name || t("contact.anonymous")} ${c.email || c.phone || ""}`.trim() }));
      if (live.sample.length) sampleSel.value = String(live.sample[0].id);
    } catch (err) {
      audience.textContent = err.message;
    }
  }
  segment.addEventListener("change", loadAudience);

  const checks = inboxes.map((i) => h("input", { type: "checkbox", value: i.id, checked: (b?.inbox_ids || []).includes(i.id),
    "data-testid": "bc-inbox", dataset: { channel: i.channel_type }, "aria-label": i.name }));
  const channelsBox = h("div.bc-channels", {}, inboxes.length
    ? inboxes.map((i, n) => h("label.check", {}, checks[n], channelIcon(i.channel_type), h("span", { text: ` ${i.name} ` }),
      h("span.muted", { text: `(${label("mk.channel", i.channel_type)})` })))
    : h("p.error", { text: t("mk.compose.no_inboxes") }));
  const subject = h("input", { value: b?.subject || "", maxlength: 255, "data-testid": "bc-subject" });
  const subjectField = fieldBox(t("mk.compose.subject"), subject);
  const syncSubject = () => { subjectField.hidden = !checks.some((c) => c.checked && c.dataset.channel === "email"); };
  for (const c of checks) c.addEventListener("change", syncSubject);
  syncSubject();

  const template = h("textarea", { rows: 6, maxlength: 20000, "data-testid": "bc-template", placeholder: t("mk.compose.placeholder") });
  template.value = b?.template || "";
  const insert = (text) => {
    const { selectionStart: s, selectionEnd: e, value } = template;
    template.value = value.slice(0, s) + text + value.slice(e);
    template.focus();
    template.selectionStart = template.selectionEnd = s + text.length;
  };
  const vars = [["{{name | " + t("mk.compose.friend") + "}}", t("contact.name")], ["{{email}}", t("contact.email")], ["{{phone}}", t("contact.phone")],
    ...defs.map((d) => [`{{attributes.${d.key} | }}`, d.label])];
  const varButtons = h("div.vars", {}, h("span.muted", { text: t("mk.compose.insert") }),
    vars.map(([v, lbl]) => h("button.chip", { type: "button", title: v, text: lbl, on: { click: () => insert(v) } })));
  const replyDays = h("input", { type: "number", min: 0, max: 30, value: b?.reply_window_days ?? 3, class: "num", "data-testid": "bc-reply-days" });

  function body() {
    const inboxIds = checks.filter((c) => c.checked).map((c) => Number(c.value));
    if (!name.value.trim()) throw new Error(t("mk.compose.need_name"));
    if (!segment.value) throw new Error(t("mk.compose.need_segment"));
    if (!inboxIds.length) throw new Error(t("mk.compose.need_channel"));
    if (!template.value.trim()) throw new Error(t("mk.compose.need_message"));
    const out = { name: name.value.trim(), segment_id: Number(segment.value), inbox_ids: inboxIds, template: template.value,
      reply_window_days: Number(replyDays.value || 0) };
    if (subject.value.trim()) out.subject = subject.value.trim();
    return { ...out, ...wechat.fields() };
  }

  async function save() {
    const data = body();
    const saved = id ? await api("PATCH", `/broadcasts/${id}`, data) : await post("/broadcasts", data);
    if (!id) history.replaceState(null, "", `/broadcasts/${saved.id}`); // stay in the composer, now on the draft
    id = saved.id;
    deleteBtn.hidden = false;
    return saved;
  }
  const wechat = wechatSection(b, checks, save);
  const act = (button, fn) => button.addEventListener("click", () => {
    error.hide();
    busy(button, fn, (err) => error.show(err));
  });

  const previewBox = h("div.preview-cards", { "data-testid": "bc-preview" });
  const previewBtn = h("button", { type: "button", "data-testid": "bc-preview-btn", text: t("mk.compose.preview") });
  const testBtn = h("button", { type: "button", "data-testid": "bc-test-btn", text: t("mk.compose.test") });
  act(previewBtn, async () => {
    await save();
    const res = await post(`/broadcasts/${id}/preview`, { contact_id: sampleSel.value ? Number(sampleSel.value) : null });
    replace(previewBox, res.channels.map(previewCard));
  });
  act(testBtn, async () => {
    if (!sampleSel.value) throw new Error(t("mk.compose.test_needs_contact"));
    await save();
    const res = await post(`/broadcasts/${id}/test`, { contact_id: Number(sampleSel.value) });
    toast(t("mk.compose.test_sent", { channel: label("mk.channel", res.channel) }), "ok", 4000);
  });

  const saveBtn = h("button", { type: "button", "data-testid": "bc-save", text: t("mk.compose.save_draft") });
  act(saveBtn, async () => {
    await save();
    toast(t("mk.saved"), "ok", 2000);
  });
  const sendBtn = h("button.primary", { type: "button", "data-testid": "bc-send", text: t("mk.compose.send_now") });
  act(sendBtn, async () => {
    await save();
    const res = await post(`/broadcasts/${id}/start`);
    toast(res.batches ? t("wx.started_sendall") : t("mk.compose.started", { targeted: fmtNum(res.targeted), queued: fmtNum(res.queued), skipped: fmtNum(res.skipped) }), "ok", 5000);
    reopen();
  });
  const at = h("input", { type: "datetime-local", "data-testid": "bc-at", value: localValue(b?.scheduled_at) });
  const scheduleBtn = h("button", { type: "button", "data-testid": "bc-schedule", text: t("mk.compose.schedule") });
  act(scheduleBtn, async () => {
    if (!at.value) throw new Error(t("mk.compose.need_time"));
    const when = new Date(at.value);
    if (!(when > new Date())) throw new Error(t("mk.compose.time_past"));
    await save();
    await post(`/broadcasts/${id}/schedule`, { at: when.toISOString() });
    toast(t("mk.compose.scheduled", { time: fmtTime(when.toISOString(), { full: true }) }), "ok", 4000);
    reopen();
  });
  const deleteBtn = h("button.danger", { type: "button", hidden: !id, "data-testid": "bc-delete", text: t("mk.delete") });
  act(deleteBtn, async () => {
    if (!confirm(t("mk.compose.confirm_delete"))) return;
    await del(`/broadcasts/${id}`);
    navigate("/broadcasts");
  });
  const cancelSchedule = b?.status === "scheduled" ? h("button.danger", { type: "button", "data-testid": "broadcast-cancel", text: t("mk.broadcasts.cancel") }) : null;
  if (cancelSchedule) act(cancelSchedule, async () => {
    await post(`/broadcasts/${id}/cancel`);
    reopen();
  });

  await loadAudience();
  const status = b ? h("p", {}, statusChip(b.status), b.status === "scheduled" ? h("span", { text: " " + fmtTime(b.scheduled_at, { full: true }) }) : null,
    b.last_error ? h("span.error", { text: " " + b.last_error }) : null) : null;
  return {
    el: frame("broadcasts", b ? b.name : t("mk.broadcasts.new"), h("a.button", { href: "/broadcasts", "data-link": "", text: t("mk.back") }),
      status,
      h("div.mk-split", {},
        h("div.mk-card.compose", { "data-testid": "composer" },
          fieldBox(t("mk.name"), name),
          fieldBox(t("mk.broadcasts.audience"), h("div.row", {}, segment, h("a", { href: "/segments/new", "data-link": "", text: t("mk.compose.new_segment") }))), audience,
          h("h4", { text: t("mk.channels") }), h("p.muted", { text: t("mk.compose.channel_rules") }), channelsBox,
          subjectField, wechat.el,
          fieldBox(t("mk.compose.message"), template), varButtons, h("p.muted", { text: t("mk.compose.fallback_hint") }),
          fieldBox(t("mk.compose.reply_days"), replyDays),
          error.el,
          h("div.actions", {}, saveBtn, sendBtn, h("span.spacer"), at, scheduleBtn, cancelSchedule, deleteBtn)),
        h("aside.mk-card.preview-card", {}, h("h3", { text: t("mk.compose.preview") }),
          fieldBox(t("mk.compose.sample"), sampleSel), h("div.actions", {}, previewBtn, testBtn), previewBox))),
  };
}

function localValue(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function previewCard(p) {
  const verdict = p.eligible === true ? h("span.chip.ok", { "data-testid": "pv-eligible", text: t("mk.compose.will_receive") })
    : p.eligible === false ? h("span.chip.bad", { "data-testid": "pv-skip", text: t("mk.compose.will_skip", { reason: label("mk.reason", p.skip_reason) }) })
      : h("span.chip", { text: t("mk.compose.no_identity") });
  return h("div.pv-card", { "data-testid": "pv-card", dataset: { channel: p.channel } },
    h("div.pv-head", {}, channelTag(p.channel), " ", verdict, p.content_type === "template" ? h("span.chip", { text: t("mk.compose.template_mode") }) : null,
      p.parts > 1 ? h("span.chip", { text: t("mk.compose.parts", { n: p.parts }) }) : null),
    p.subject ? h("p", {}, h("strong", { text: t("mk.compose.subject") + ": " }), h("span", { "data-testid": "pv-subject", text: p.subject })) : null,
    h("pre.pv-text", { "data-testid": "pv-text", text: p.text }),
    p.headers?.["List-Unsubscribe"] ? h("p.muted", { text: "List-Unsubscribe: " + p.headers["List-Unsubscribe"] }) : null);
}
