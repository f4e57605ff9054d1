// Tiny DOM helpers. Text always goes in through textContent / text nodes: customer text is never HTML.

/** h("div.cls#id", {attrs, on: {click}}, ...children) — children are nodes or strings (made text nodes). */
export function h(spec, attrs = {}, ...children) {
  const [tagAndClasses, id] = spec.split("#");
  const [tag, ...classes] = tagAndClasses.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (id) el.id = id;
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === "text") el.textContent = String(value);
    else if (key === "class") el.className += (el.className ? " " : "") + value;
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected") el[key] = Boolean(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

/** A <select> from [value, label] pairs. */
export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const [v, label] of options) {
    const opt = h("option", { value: v, text: label });
    if (String(v) === String(value ?? "")) opt.selected = true;
    el.appendChild(opt);
  }
  return el;
}

/** Only http(s) links from data, never javascript: or data: URLs. */
export function safeUrl(url) {
  try {
    const u = new URL(url, location.origin);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
