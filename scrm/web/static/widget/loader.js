/* scrm web chat loader. Paste on your site:
 *   <script src="https://crm.example.com/static/widget/loader.js" data-inbox="3" async></script>
 * Optional, before it: window.scrmSettings = {lang: "zh" | "en", identifier, identifier_hash, name, email,
 * phone, attributes: {...}}  (identifier_hash = hex HMAC-SHA256(inbox secret, identifier), computed by your server).
 * API: scrm("open"), scrm("close"), scrm("identify", {identifier, identifier_hash, name, ...}).
 * The chat itself runs in an iframe from the scrm server; this script only adds the launcher and the frame. */
(function () {
  "use strict";
  if (window.__scrmChat) return;
  var script = document.currentScript || document.querySelector('script[src*="/static/widget/loader.js"]');
  if (!script) return;
  var base = new URL(script.src, location.href).origin;
  var opts = Object.assign({}, window.scrmSettings || {});
  var inbox = String(opts.inbox || script.getAttribute("data-inbox") || "");
  if (!/^\d+$/.test(inbox)) { console.warn("[scrm] chat widget: data-inbox is missing"); return; }
  var rawLang = opts.lang || script.getAttribute("data-lang") || document.documentElement.lang || navigator.language || "";
  var lang = /^zh/i.test(rawLang) ? "zh" : "en";
  var TEXT = { zh: { open: "打开在线客服", close: "关闭在线客服", unread: "条未读消息" },
               en: { open: "Open chat", close: "Close chat", unread: " unread messages" } }[lang];
  var host, shadow, launcher, badge, panel, frame, cfg, isOpen = false, ready = false, queue = [];

  var api = window.__scrmChat = {
    open: function () { setOpen(true); }, close: function () { setOpen(false); },
    toggle: function () { setOpen(!isOpen); },
    identify: function (fields) { opts = Object.assign(opts, fields || {}); post({ scrm: "identity", identity: identity() }); }
  };
  var pending = (window.scrm && window.scrm.q) || [];
  window.scrm = function (cmd, arg) { if (api[cmd]) api[cmd](arg); };
  pending.forEach(function (args) { window.scrm.apply(null, args); });

  function identity() {
    var out = {};
    ["identifier", "identifier_hash", "name", "email", "phone", "attributes"].forEach(function (k) {
      if (opts[k] !== undefined && opts[k] !== null) out[k] = opts[k];
    });
    return out;
  }

  function post(msg) {
    if (!ready) { queue.push(msg); return; }
    frame.contentWindow.postMessage(msg, base);
  }

  function contrastText(hex) {
    var n = parseInt(String(hex || "#2563eb").slice(1), 16);
    var c = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map(function (v) {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] > 0.45 ? "#111827" : "#ffffff";
  }

  var CSS = ":host{all:initial}" +
    ".launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border-radius:50%;border:0;cursor:pointer;" +
    "background:var(--brand);color:var(--on-brand);box-shadow:0 4px 16px rgba(15,23,42,.3);z-index:2147483000;" +
    "display:flex;align-items:center;justify-content:center;padding:0}" +
    ".launcher:focus-visible{outline:3px solid #111827;outline-offset:3px}.launcher svg{width:28px;height:28px}" +
    ".badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;border-radius:10px;background:#dc2626;" +
    "color:#fff;font:600 12px/20px system-ui,sans-serif;text-align:center;padding:0 5px;box-sizing:border-box}" +
    ".panel{position:fixed;right:20px;bottom:92px;width:380px;height:min(640px,calc(100vh - 112px));z-index:2147483001;" +
    "border-radius:14px;overflow:hidden;box-shadow:0 12px 40px rgba(15,23,42,.35);background:#fff;display:none}" +
    ".panel.open{display:block}iframe{border:0;width:100%;height:100%;display:block}" +
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;height:100%;border-radius:0}" +
    ".panel.open~.launcher{display:none}}";
  var ICON_CHAT = "M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z";
  var ICON_CLOSE = "M6 6l12 12M18 6L6 18";

  function svg(d) {
    var ns = "http://www.w3.org/2000/svg", el = document.createElementNS(ns, "svg"), path = document.createElementNS(ns, "path");
    el.setAttribute("viewBox", "0 0 24 24");
    el.setAttribute("aria-hidden", "true");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "2.2");
    path.setAttribute("stroke-linecap", "round");
    el.appendChild(path);
    return el;
  }

  function mount(config) {
    cfg = config;
    host = document.createElement("div");
    host.id = "scrm-chat";
    host.setAttribute("data-testid", "scrm-widget");
    shadow = host.attachShadow({ mode: "open" });
    var style = document.createElement("style");
    style.textContent = CSS;
    shadow.appendChild(style);
    host.style.setProperty("--brand", cfg.color || "#2563eb");
    host.style.setProperty("--on-brand", contrastText(cfg.color));
    panel = document.createElement("div");
    panel.className = "panel";
    panel.id = "scrm-chat-panel";
    panel.setAttribute("data-testid", "scrm-panel");
    frame = document.createElement("iframe");
    var q = "?lang=" + lang + (opts.source ? "&source=" + encodeURIComponent(opts.source) : "");
    frame.src = base + "/chat/" + inbox + "/widget" + q;
    frame.title = cfg.title || "Chat";
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms allow-popups allow-downloads");
    frame.setAttribute("allow", "clipboard-write");
    frame.setAttribute("data-testid", "scrm-frame");
    panel.appendChild(frame);
    launcher = document.createElement("button");
    launcher.type = "button";
    launcher.className = "launcher";
    launcher.setAttribute("data-testid", "scrm-launcher");
    launcher.setAttribute("aria-controls", "scrm-chat-panel");
    launcher.addEventListener("click", function () { setOpen(!isOpen); });
    badge = document.createElement("span");
    badge.className = "badge";
    badge.setAttribute("data-testid", "scrm-badge");
    badge.hidden = true;
    shadow.appendChild(panel);
    shadow.appendChild(launcher);
    setOpen(false, true);
    document.body.appendChild(host);
  }

  function setOpen(open, silent) {
    if (!launcher) return;
    isOpen = open;
    panel.classList.toggle("open", open);
    launcher.replaceChildren(svg(open ? ICON_CLOSE : ICON_CHAT), badge);
    launcher.setAttribute("aria-expanded", String(open));
    launcher.setAttribute("aria-label", open ? TEXT.close : TEXT.open);
    if (open) { badge.hidden = true; }
    post({ scrm: "open", open: open });
    if (!open && !silent) launcher.focus();
  }

  window.addEventListener("message", function (e) {
    if (!frame || e.origin !== base || e.source !== frame.contentWindow) return;
    var d = e.data || {};
    if (d.scrm === "ready") {
      ready = true;
      frame.contentWindow.postMessage({ scrm: "identity", identity: identity(), page: location.href, open: isOpen }, base);
      queue.splice(0).forEach(post);
    } else if (d.scrm === "close") {
      setOpen(false);
    } else if (d.scrm === "unread" && !isOpen) {
      var n = Number(d.count) || 0;
      badge.hidden = n <= 0;
      badge.textContent = n > 9 ? "9+" : String(n);
      launcher.setAttribute("aria-label", TEXT.open + (n > 0 ? " (" + n + TEXT.unread + ")" : ""));
    }
  });

  fetch(base + "/chat/" + inbox + "/config?lang=" + lang, { credentials: "omit" })
    .then(function (r) {
      if (!r.ok) throw new Error(r.status === 403 ? "this site is not allowed to use this chat" : "HTTP " + r.status);
      return r.json();
    })
    .then(function (config) {
      if (document.body) mount(config); else document.addEventListener("DOMContentLoaded", function () { mount(config); });
    })
    .catch(function (err) { console.warn("[scrm] chat widget not loaded: " + err.message); });
})();
