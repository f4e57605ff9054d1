// Chinese (default when the browser asks for it) and English; times in the agent's time zone.
import { zh } from "./i18n/zh.js";
import { en } from "./i18n/en.js";
import { emit, state } from "./state.js";

const DICTS = { zh, en };
const KEY = "scrm.lang";
let lang = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(KEY);
  if (saved && DICTS[saved]) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!DICTS[next] || next === lang) return;
  lang = next;
  localStorage.setItem(KEY, next);
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
  emit("lang-changed", next);
}

/** Translate `key`, filling {name} placeholders from `vars` (as text, never markup). */
export function t(key, vars = {}) {
  const template = DICTS[lang][key] ?? DICTS.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

function locale() {
  return lang === "zh" ? "zh-CN" : "en-GB";
}

function safeZone() {
  try {
    new Intl.DateTimeFormat("en", { timeZone: state.timezone });
    return state.timezone;
  } catch {
    return undefined;
  }
}

/** A time in the agent's zone: "14:05" today, else "11-20 14:05", with the year when not this year. */
export function fmtTime(iso, { full = false } = {}) {
  if (!iso) return "";
  const d = new Date(iso);
  const zone = safeZone();
  const dayOf = (x) => new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(x);
  const opts = { timeZone: zone, hour: "2-digit", minute: "2-digit", hour12: false };
  if (full || dayOf(d) !== dayOf(new Date())) {
    opts.month = "2-digit";
    opts.day = "2-digit";
    if (full || d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
  }
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

/** How long since `iso`: "3 min", "2 h", "4 d". */
export function fmtAgo(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return t("time.now");
  if (s < 3600) return t("time.min", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.hour", { n: Math.floor(s / 3600) });
  return t("time.day", { n: Math.floor(s / 86400) });
}

document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
