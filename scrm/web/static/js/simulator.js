// The demo's customer simulator: chat as a customer into a "memory" inbox and watch replies arrive.
import { api, get } from "./api.js";
import { h, replace, select } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { toast } from "./toast.js";

const SENDER = "scrm.sim.sender";
const NAME = "scrm.sim.name";

export async function simulatorPage() {
  const inboxes = (await get("/inboxes")).items.filter((i) => i.channel_type === "memory" && i.active);
  if (!inboxes.length) return { name: "simulator", el: h("div.empty", { "data-testid": "sim-none", text: t("sim.none") }) };
  const inboxSel = select(inboxes.map((i) => [i.id, i.name]), inboxes[0].id, { "data-testid": "sim-inbox", "aria-label": t("filter.inbox") });
  const sender = h("input", { value: localStorage.getItem(SENDER) || "sim-user-1", "data-testid": "sim-sender" });
  const name = h("input", { value: localStorage.getItem(NAME) || t("sim.default_name"), "data-testid": "sim-name" });
  const log = h("div.sim-log", { "data-testid": "sim-log" });
  const text = h("input.sim-text", { placeholder: t("sim.placeholder"), "data-testid": "sim-text" });
  const sendBtn = h("button.primary", { text: t("composer.send"), "data-testid": "sim-send" });
  let seen = new Map();
  let lastId = 0;
  let timer = null;

  function reset() {
    seen = new Map();
    lastId = 0;
    replace(log);
    localStorage.setItem(SENDER, sender.value.trim());
    localStorage.setItem(NAME, name.value.trim());
    poll();
  }
  for (const el of [inboxSel, sender, name]) el.addEventListener("change", reset);

  async function postAsCustomer(body) {
    const id = `sim-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      await api("POST", `/webhooks/memory/${inboxSel.value}`, { id, sender: sender.value.trim(), name: name.value.trim(), ...body }, { raw: true });
      poll();
    } catch (err) {
      toast(err.message);
    }
  }

  async function send() {
    const value = text.value.trim();
    if (!value) return;
    text.value = "";
    await postAsCustomer({ text: value });
  }
  sendBtn.addEventListener("click", send);
  text.addEventListener("keydown", (ev) => ev.key === "Enter" && !ev.isComposing && send());

  function bubble(m) {
    const mine = m.direction === "in"; // the customer's own messages
    return h("div.sim-msg", { class: mine ? "mine" : "theirs", "data-testid": "sim-msg", "data-id": m.id },
      h("div.text", { text: m.text || "" }),
      (m.choices || []).length ? h("div.choices", {}, m.choices.map((c) => h("button.choice", { text: c.label,
        on: { click: () => postAsCustomer({ text: c.label, choice: c.payload }) } }))) : null,
      h("time", { text: fmtTime(m.created_at) + (mine ? "" : " · " + t("sender." + (m.sender_kind === "bot" ? "bot" : "agent"))) }));
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const data = await get(`/simulator/${inboxSel.value}/messages?sender=${encodeURIComponent(sender.value.trim())}`);
      for (const m of data.items) {
        // Replies show once the channel has "sent" them, like a phone would.
        if (m.direction === "out" && !["sent", "delivered", "read"].includes(m.delivery_status)) continue;
        if (seen.has(m.id)) continue;
        seen.set(m.id, m);
        lastId = Math.max(lastId, m.id);
        log.append(bubble(m));
        log.scrollTop = log.scrollHeight;
      }
    } catch (err) {
      if (err.status !== 401) toast(err.message);
    }
    if (document.body.contains(log)) timer = setTimeout(poll, 1000);
  }

  const el = h("div.simulator", {},
    h("h1", { text: t("sim.title") }), h("p.muted", { text: t("sim.hint") }),
    h("div.sim-settings", {}, h("label.field", {}, h("span", { text: t("filter.inbox") }), inboxSel),
      h("label.field", {}, h("span", { text: t("sim.sender") }), sender), h("label.field", {}, h("span", { text: t("sim.name") }), name)),
    h("div.phone", {}, log, h("div.sim-input", {}, text, sendBtn)));
  setTimeout(poll, 0);
  return { name: "simulator", el, destroy: () => clearTimeout(timer) };
}
