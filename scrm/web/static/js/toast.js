// Readable messages for errors and confirmations (never a blank page).
import { h } from "./dom.js";

export function toast(message, kind = "error", ms = 6000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = h("div.toast", { class: kind, role: kind === "error" ? "alert" : "status", "data-testid": "toast", text: message });
  el.addEventListener("click", () => el.remove());
  box.appendChild(el);
  setTimeout(() => el.remove(), ms);
}
