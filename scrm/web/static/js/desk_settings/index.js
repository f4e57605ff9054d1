// Desk settings (admins): teams and auto-assignment, business hours with China's holidays, SLA policies,
// automation rules with a dry run, outgoing webhooks with their log and a test send, CSAT texts,
// canned replies; inbox membership lives on the admin's inbox pages.
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { state } from "../state.js";
import { deskFrame, forbidden, loadInto, subnav } from "../desk_common.js";

const TABS = ["teams", "hours", "sla", "rules", "webhooks", "csat", "canned", "membership"];
const MODULES = {
  teams: () => import("./teams.js"), hours: () => import("./hours.js"), sla: () => import("./sla.js"),
  rules: () => import("./rules.js"), webhooks: () => import("./webhooks.js"), csat: () => import("./csat.js"),
};

export function deskSettingsPage(path) {
  const el = h("div.desk-wrap");
  function show(p) {
    if (state.me?.role !== "admin") return replace(el, forbidden("desk.forbidden_admin"));
    const tab = TABS.find((x) => p === "/desk-settings/" + x) || "teams";
    const body = h("div.settings-body", { "data-testid": "settings-" + tab });
    replace(el, deskFrame("desk-settings", t("nav.desk_settings"), null, subnav("/desk-settings", TABS, tab, "ds.tab"), body));
    if (tab === "canned") {
      replace(body, h("p", {}, t("ds.canned_hint"), " ", h("a", { href: "/admin/canned", "data-link": "", text: t("admin.canned") })));
    } else if (tab === "membership") {
      replace(body, h("p", { "data-testid": "membership-note" }, t("ds.membership_hint"), " ",
        h("a", { href: "/admin/inboxes", "data-link": "", text: t("admin.inboxes") })));
    } else {
      loadInto(body, async () => (await MODULES[tab]()).render(() => show(location.pathname)));
    }
  }
  show(path);
  return { name: "desk_settings", el, route: show };
}
