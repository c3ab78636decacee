// The /v1 API as the page calls it: the key from sessionStorage, errors as ApiError (the server's
// {"error": {"code", "message", "details"}} body), the change feed's Server-Sent Events read from a
// fetch() stream (EventSource cannot send the Authorization header).

const KEY = "memos-ray.key";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

// Codes that say access was refused (memos_ray/errors.py: denial = True): a 404 for a cube the caller
// has no role on is one, so cubes are not discoverable across tenants.
const DENIALS = new Set([
  "unauthenticated", "forbidden", "cube_not_found", "memory_not_found",
  "principal_not_found", "key_not_found", "job_not_found",
]);

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }

  get denied() {
    return this.status === 401 || this.status === 403 || DENIALS.has(this.code);
  }
}

export function seg(id) {
  return encodeURIComponent(String(id));
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v !== undefined && v !== null && v !== "") params.append(name, String(v));
    }
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

function headers(extra = {}, key = getKey()) {
  const h = { Accept: "application/json", ...extra };
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = body && body.error ? body.error : {};
  return new ApiError(
    response.status,
    err.code || `http_${response.status}`,
    err.message || `${response.status} ${response.statusText || "error"}`,
    err.details || {},
  );
}

async function send(method, path, { query, body, signal, key } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }, key), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", `the service could not be reached (${exc && exc.message ? exc.message : exc})`);
  }
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const api = {
  get: (path, opts) => send("GET", path, opts),
  post: (path, body, opts = {}) => send("POST", path, { ...opts, body }),
  put: (path, body, opts = {}) => send("PUT", path, { ...opts, body }),
  patch: (path, body, opts = {}) => send("PATCH", path, { ...opts, body }),
  del: (path, opts) => send("DELETE", path, opts),
};

// Read a text/event-stream answer: onEvent({event, id, data}) per event (data parsed as JSON when it
// is JSON). Resolves when the server ends the stream; rejects with ApiError on an error answer, or
// with an AbortError when `signal` aborts.
export async function stream(path, { query, signal, onEvent }) {
  let response;
  try {
    response = await fetch(url(path, query), { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", `the change feed could not be reached (${exc && exc.message ? exc.message : exc})`);
  }
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseEvent(block);
      if (parsed) onEvent(parsed);
    }
  }
}

function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: the server's keepalive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { event, id, data: parsed };
}
