// Client-side navigation (History API). Pages call navigate(); main.js, which owns the page frame,
// routes on the "route" event and refreshes the header's counts on "refresh-counts".
import { emit } from "./state.js";

export function navigate(path, { replace = false } = {}) {
  if (path === location.pathname + location.search) return;
  history[replace ? "replaceState" : "pushState"](null, "", path);
  emit("route");
}

export function refreshCounts() {
  emit("refresh-counts");
}
