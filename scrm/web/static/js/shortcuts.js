// Keyboard shortcuts for the inbox: j/k next/previous conversation, r reply, n note, e resolve,
// a assign to me, g t tickets, g i inbox, ? shows them all. Keys typed into a field are left alone.
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { navigate } from "./router.js";
import { state } from "./state.js";

export const SHORTCUTS = [
  ["j", "next"], ["k", "previous"], ["r", "reply"], ["n", "note"], ["e", "resolve"], ["a", "assign_me"],
  ["g i", "go_inbox"], ["g t", "go_tickets"], ["Esc", "leave_field"], ["?", "help"],
];
let overlay = null;
let pendingG = false;

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function rows() {
  return [...document.querySelectorAll('[data-testid="conv-row"]')];
}

function move(step) {
  const list = rows();
  if (!list.length) return;
  const at = list.findIndex((r) => r.classList.contains("selected"));
  const next = list[Math.max(0, Math.min(list.length - 1, at < 0 ? 0 : at + step))];
  next.click();
  next.scrollIntoView({ block: "nearest" });
}

function click(testid) {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  if (el && !el.disabled) el.click();
  return el;
}

function compose(mode) {
  click(mode === "note" ? "mode-note" : "mode-reply");
  document.querySelector('[data-testid="composer-input"]')?.focus();
}

function assignMe() {
  const sel = document.querySelector('[data-testid="assign"]');
  if (!sel || !state.me || sel.value === String(state.me.id)) return;
  sel.value = String(state.me.id);
  sel.dispatchEvent(new Event("change"));
}

export function toggleHelp(show = !overlay) {
  if (!show) {
    overlay?.remove();
    overlay = null;
    return;
  }
  overlay = h("div.shortcut-overlay", { "data-testid": "shortcut-help", role: "dialog", "aria-label": t("keys.title"),
    on: { click: (e) => e.target === overlay && toggleHelp(false) } },
  h("div.shortcut-card", {}, h("h2", { text: t("keys.title") }),
    h("table", {}, SHORTCUTS.map(([key, action]) => h("tr", {}, h("td", {}, h("kbd", { text: key })), h("td", { text: t("keys." + action) })))),
    h("button", { text: t("desk.close"), on: { click: () => toggleHelp(false) } })));
  document.body.append(overlay);
}

function onKey(ev) {
  if (!state.me || !["admin", "agent"].includes(state.me.role) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "Escape") {
    if (overlay) return toggleHelp(false);
    if (typing(ev.target)) ev.target.blur();
    return;
  }
  if (typing(ev.target)) return;
  if (pendingG) {
    pendingG = false;
    if (ev.key === "i") navigate("/");
    else if (ev.key === "t") navigate("/tickets");
    return;
  }
  const inbox = location.pathname === "/" || location.pathname.startsWith("/conversations/");
  const actions = {
    "?": () => toggleHelp(),
    g: () => { pendingG = true; setTimeout(() => (pendingG = false), 1500); },
    j: () => inbox && move(1),
    k: () => inbox && move(-1),
    r: () => inbox && compose("reply"),
    n: () => inbox && compose("note"),
    e: () => inbox && click("resolve"),
    a: () => inbox && assignMe(),
  };
  const fn = actions[ev.key];
  if (fn) {
    ev.preventDefault();
    fn();
  }
}

let installed = false;
/** Listen for the shortcuts (once per page load). */
export function installShortcuts() {
  if (installed) return;
  installed = true;
  document.addEventListener("keydown", onKey);
}
