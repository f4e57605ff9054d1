// The desk pages in the navigation: which paths they own, who sees their links, how they load.
import { h } from "./dom.js";
import { t } from "./i18n.js";

const PAGES = {
  tickets: { test: (p) => p === "/tickets" || p.startsWith("/tickets/"), roles: ["admin", "agent"],
    load: async (path) => (await import("./tickets.js")).ticketsPage(path) },
  kb: { test: (p) => p === "/kb" || p.startsWith("/kb/"), roles: ["admin", "agent"],
    load: async (path) => (await import("./kb.js")).kbPage(path) },
  reports: { test: (p) => p === "/reports", roles: ["admin", "agent"],
    load: async () => (await import("./reports.js")).reportsPage() },
  desk_settings: { test: (p) => p === "/desk-settings" || p.startsWith("/desk-settings/"), roles: ["admin"],
    load: async (path) => (await import("./desk_settings/index.js")).deskSettingsPage(path), href: "/desk-settings/teams" },
  audit: { test: (p) => p === "/audit", roles: ["admin"], load: async () => (await import("./audit.js")).auditPage() },
  preferences: { test: (p) => p === "/preferences", roles: ["admin", "agent"], nav: false,
    load: async () => (await import("./preferences.js")).preferencesPage() },
  notifications: { test: (p) => p === "/notifications", roles: ["admin", "agent"], nav: false,
    load: async () => (await import("./notifications.js")).notificationsPage() },
};

/** The desk page a path belongs to, or null. */
export function deskPageName(path) {
  return Object.keys(PAGES).find((name) => PAGES[name].test(path)) || null;
}

export function isDeskPage(name) {
  return name in PAGES;
}

export async function buildDeskPage(name, path) {
  return PAGES[name].load(path);
}

/** Navigation links for the pages this role may use. */
export function deskNav(role) {
  return Object.entries(PAGES).filter(([, p]) => p.nav !== false && p.roles.includes(role)).map(([name, p]) =>
    h("a", { href: p.href || (name === "desk_settings" ? "/desk-settings" : "/" + name), "data-link": "", "data-nav": name,
      "data-testid": "nav-" + name, text: t("nav." + name) }));
}
