// The public REST API, as an integrator would call it: JSON, cookie session, X-CSRF-Token on writes.
import { emit, state } from "./state.js";
import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call /api/v1{path}; resolves with the JSON body or throws ApiError with a readable message. */
export async function api(method, path, body, { raw = false, silent401 = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let resp;
  try {
    resp = await fetch((raw ? "" : "/api/v1") + path, init);
  } catch {
    throw new ApiError(0, "network", t("error.network"));
  }
  let data = null;
  const text = await resp.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = data?.error || {};
    const message = err.message || `${t("error.http")} ${resp.status}`;
    if (resp.status === 401 && !silent401) emit("session-expired");
    throw new ApiError(resp.status, err.code || "http_" + resp.status, message);
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body ?? {}, opts);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** Query string from an object, skipping empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}
