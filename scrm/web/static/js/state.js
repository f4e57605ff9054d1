// Shared session state: who is logged in, their CSRF token, language and time zone.
export const state = {
  me: null, // {id, login, display_name, role, availability}
  csrf: null,
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  agents: new Map(), // id -> agent, for names in threads and the assign menu
};

const listeners = new Map();

/** A minimal event emitter for app-wide happenings (socket events, session expiry). */
export function on(name, fn) {
  if (!listeners.has(name)) listeners.set(name, new Set());
  listeners.get(name).add(fn);
  return () => listeners.get(name).delete(fn);
}

export function emit(name, detail) {
  for (const fn of listeners.get(name) || []) {
    try {
      fn(detail);
    } catch (err) {
      console.error(err);
    }
  }
}

export function isAdmin() {
  return state.me?.role === "admin";
}
