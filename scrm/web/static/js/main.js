// Boot, routing (History API) and the page frame: header with agent, availability, waiting count, live state.
import { get, patch, post } from "./api.js";
import { clear, debounce, h, replace, select } from "./dom.js";
import { getLang, setLang, t } from "./i18n.js";
import { emit, isAdmin, on, state } from "./state.js";
import { toast } from "./toast.js";
import { live } from "./ws.js";
import { navigate } from "./router.js";
import { buildDeskPage, deskNav, deskPageName, isDeskPage } from "./desk_nav.js";
import { notificationBell } from "./notifications.js";
import { installShortcuts } from "./shortcuts.js";

const app = document.getElementById("app");
const MARKETING_PAGES = ["contacts", "segments", "broadcasts", "campaigns"];
let page = null; // {name, el, destroy(), route?(path)}
let expiredNotice = false;


async function loadMe() {
  try {
    const me = await get("/me", { silent401: true });
    state.me = me.agent;
    state.csrf = me.csrf_token;
    state.timezone = me.display?.timezone || state.timezone;
    return true;
  } catch (err) {
    if (err.status === 401) return false;
    throw err;
  }
}

async function loadAgents() {
  try {
    const data = await get("/agents");
    state.agents = new Map(data.items.map((a) => [a.id, a]));
  } catch {
    /* names fall back to ids */
  }
}

function pageFor(path) {
  if (path === "/login") return "login";
  if (path === "/" || /^\/conversations\/\d+$/.test(path)) return "inbox";
  if (path === "/admin" || path.startsWith("/admin/")) return "admin";
  if (path === "/simulator") return "simulator";
  const marketing = path.match(/^\/(contacts|segments|broadcasts|campaigns)(\/|$)/);
  if (marketing) return marketing[1];
  return deskPageName(path) || "notfound";
}

async function route() {
  const path = location.pathname;
  const name = pageFor(path);
  if (name !== "login" && !state.me) {
    navigate("/login?next=" + encodeURIComponent(path + location.search), { replace: true });
    return;
  }
  if (name === "inbox" && state.me?.role === "marketer") { // the inbox is for support roles
    navigate("/contacts", { replace: true });
    return;
  }
  if (name === "login" && state.me) {
    navigate("/", { replace: true });
    return;
  }
  if (page && page.name === name && page.route) {
    page.route(path); // same page, new sub-route (another conversation, another admin tab)
    updateNav();
    return;
  }
  if (page?.destroy) page.destroy();
  page = null;
  try {
    page = await buildPage(name, path);
  } catch (err) {
    page = { name, el: h("div.page-error", { role: "alert", text: err.message || String(err) }) };
  }
  if (name === "login") replace(app, page.el);
  else replace(app, header(), h("main.main", {}, page.el));
  updateNav();
}

async function buildPage(name, path) {
  if (name === "login") return (await import("./login.js")).loginPage(onLoggedIn, expiredNotice);
  if (name === "inbox") return (await import("./inbox.js")).inboxPage(path);
  if (name === "admin") return (await import("./admin.js")).adminPage(path);
  if (name === "simulator") return (await import("./simulator.js")).simulatorPage();
  if (MARKETING_PAGES.includes(name)) return (await import(`./${name}.js`))[`${name}Page`](path);
  if (isDeskPage(name)) return buildDeskPage(name, path);
  return { name, el: h("div.empty", { text: t("error.notfound") }) };
}

async function onLoggedIn(next) {
  expiredNotice = false;
  await loadMe();
  await loadAgents();
  startLive();
  navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replace: true });
}

// ---- header ---------------------------------------------------------------

const counts = { waiting: 0 };
let headerEls = null;

function header() {
  const me = state.me;
  const support = me.role !== "marketer";
  const marketing = ["admin", "marketer"].includes(me.role); // what the API lets them use
  const nav = h("nav.nav", {},
    support ? h("a", { href: "/", "data-link": "", "data-nav": "inbox", text: t("nav.inbox") }) : null,
    deskNav(me.role),
    marketing ? MARKETING_PAGES.map((p) => h("a", { href: "/" + p, "data-link": "", "data-nav": p, "data-testid": "nav-" + p, text: t("nav." + p) })) : null,
    isAdmin() ? h("a", { href: "/admin/agents", "data-link": "", "data-nav": "admin", text: t("nav.admin") }) : null,
    support ? h("a", { href: "/simulator", "data-link": "", "data-nav": "simulator", text: t("nav.simulator") }) : null,
  );
  const waiting = h("span.badge.waiting", { "data-testid": "waiting-count", title: t("header.waiting_hint") });
  const liveEl = h("span.live", { "data-testid": "live-status" });
  const availability = select([["online", t("availability.online")], ["away", t("availability.away")]],
    me.availability === "away" ? "away" : "online", { "data-testid": "availability", "aria-label": t("header.availability") });
  availability.addEventListener("change", async () => {
    try {
      const res = await patch("/me", { availability: availability.value });
      state.me = res.agent;
      availability.className = "availability " + res.agent.availability;
    } catch (err) {
      toast(err.message);
    }
  });
  availability.className = "availability " + me.availability;
  const lang = select([["zh", "中文"], ["en", "English"]], getLang(), { "data-testid": "lang", "aria-label": "Language" });
  lang.addEventListener("change", () => setLang(lang.value));
  const logout = h("button.link", { "data-testid": "logout", text: t("header.logout"), on: { click: doLogout } });
  headerEls = { waiting, liveEl, nav };
  renderWaiting();
  renderLive(live.status);
  return h("header.top", {},
    h("a.brand", { href: "/", "data-link": "" }, "scrm"), nav,
    h("div.spacer"),
    support ? [waiting, liveEl] : null, notificationBell(), lang, // marketers get the daily churn warning
    h("span.me", { "data-testid": "me" },
      support ? h("a", { href: "/preferences", "data-link": "", "data-testid": "nav-preferences", title: t("prefs.title") },
        h("strong", { text: me.display_name })) : h("strong", { text: me.display_name }), " ", h("span.role", { text: t("role." + me.role) })),
    support ? availability : null, logout);
}

function updateNav() {
  if (!headerEls) return;
  const name = pageFor(location.pathname);
  for (const a of headerEls.nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.nav === name);
}

function renderWaiting() {
  if (!headerEls) return;
  headerEls.waiting.textContent = t("header.waiting", { n: counts.waiting });
  headerEls.waiting.classList.toggle("hot", counts.waiting > 0);
}

function renderLive(status) {
  if (!headerEls) return;
  headerEls.liveEl.textContent = t("live." + status);
  headerEls.liveEl.className = "live " + status;
}

async function refreshCounts() {
  if (!state.me || !["admin", "agent"].includes(state.me.role)) return;
  try {
    const c = await get("/conversations/counts");
    Object.assign(counts, c);
    renderWaiting();
    emit("counts", c);
  } catch {
    /* shown on the next refresh */
  }
}
const refreshCountsSoon = debounce(refreshCounts, 250);

async function doLogout() {
  try {
    await post("/auth/logout");
  } catch {
    /* the session may already be gone */
  }
  live.stop();
  state.me = null;
  state.csrf = null;
  navigate("/login", { replace: true });
}

function startLive() {
  if (["admin", "agent"].includes(state.me?.role)) live.start();
  refreshCounts();
}

// ---- global wiring --------------------------------------------------------

on("live-status", (status) => {
  renderLive(status);
  if (status === "reconnecting" && state.me) get("/me").catch(() => {}); // a 401 here means the session ended
});
on("live-event", (frame) => {
  if (frame.name.startsWith("conversation.") && frame.name !== "conversation.typing") refreshCountsSoon();
  if (frame.name === "agent.updated" && frame.data.agent_id === state.me?.id) {
    state.me.availability = frame.data.availability;
  }
});
on("live-resync", refreshCounts);
on("refresh-counts", refreshCounts);
on("route", route);
on("session-expired", () => {
  if (!state.me) return;
  live.stop();
  state.me = null;
  state.csrf = null;
  expiredNotice = true; // drafts stay in localStorage; the login page says why we are here
  navigate("/login?next=" + encodeURIComponent(location.pathname + location.search), { replace: true });
});
on("lang-changed", () => {
  if (page?.destroy) page.destroy();
  page = null;
  route();
});

document.addEventListener("click", (ev) => {
  const a = ev.target.closest?.("a[data-link]");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
window.addEventListener("error", (ev) => toast(t("error.unexpected") + ": " + (ev.message || "")));
window.addEventListener("unhandledrejection", (ev) => toast(ev.reason?.message || String(ev.reason)));
setInterval(refreshCounts, 30000);
installShortcuts();

(async function boot() {
  try {
    if (await loadMe()) {
      await loadAgents();
      startLive();
    }
  } catch (err) {
    replace(app, h("div.page-error", { role: "alert", text: t("error.boot") + " " + err.message }));
    return;
  }
  clear(app);
  route();
})();
