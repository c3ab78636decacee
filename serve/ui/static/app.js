// The page's shell: sign-in with a key, hash routing, and the context every view gets.
//
// Views (views.js, live.js) are `async (ctx, ...args)`; ctx gives them the root to render into, an
// AbortSignal that fires when the view is left (fetches, streams and timers stop with it), the caller
// (/v1/whoami), the cube list, and `safe(fn)` for event handlers, so that no failure is left unhandled.
// Errors are shown, never thrown: a refusal (401, 403, or a 404 for a cube the key has no role on)
// renders #denied with the server's message; a 401 signs out.

import { ApiError, api, clearKey, getKey, setKey } from "./api.js";
import { clear, denied, h } from "./dom.js";
import { adaptersView, changesView, schedulerView } from "./live.js";
import { auditView, cubesView, cubeView, searchView } from "./views.js";

const $ = (id) => document.getElementById(id);

const VIEWS = {
  cubes: ["Cubes", cubesView],
  cube: ["Cube", cubeView],
  search: ["Search", searchView],
  audit: ["Audit", auditView],
  scheduler: ["Scheduler", schedulerView],
  adapters: ["Adapters", adaptersView],
  changes: ["Changes", changesView],
};

const kept = new Map(); // view state that outlives a view (filters, the last query), for this page's life
let me = null; // the signed-in caller
let current = null; // the running view's AbortController

function banner(text) {
  const el = $("error");
  el.textContent = text || "";
  el.hidden = !text;
}

function showSignIn(message) {
  if (current) current.abort();
  current = null;
  me = null;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  clear($("view"));
  const err = $("signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("key").focus();
}

function showApp(caller) {
  me = caller;
  $("signin").hidden = true;
  $("signin-error").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("whoami").textContent = `${caller.principal} (${caller.kind}${caller.admin ? ", administrator" : ""})`;
  $("whoami").dataset.principal = caller.principal;
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/cubes";
  else route();
}

// What a failure becomes on the page. `controller` is the view it happened in (stopped on a refusal).
function report(err, controller) {
  if (!err || err.name === "AbortError") return;
  if (controller && controller.signal.aborted) return; // the view was left meanwhile
  if (err instanceof ApiError && err.status === 401) {
    clearKey();
    showSignIn(`Signed out: ${err.message}`);
    return;
  }
  if (err instanceof ApiError && err.denied) {
    if (controller) controller.abort();
    clear($("view"), denied(err));
    return;
  }
  banner(err instanceof ApiError ? `${err.message} (${err.status ? `${err.status} ` : ""}${err.code})` : `Error: ${err.message || err}`);
}

function parse(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return [parts[0] || "cubes", parts.slice(1)];
}

function context(controller) {
  const signal = controller.signal;
  let cubes = null;
  const safe = (fn) => (...args) => {
    try {
      return Promise.resolve(fn(...args)).catch((err) => report(err, controller));
    } catch (err) {
      report(err, controller);
      return Promise.resolve();
    }
  };
  return {
    root: $("view"),
    signal,
    me,
    safe,
    go: (hash) => {
      location.hash = hash;
    },
    refresh: () => route(),
    keep: (name, init) => {
      if (!kept.has(name)) kept.set(name, init());
      return kept.get(name);
    },
    cubes: (fresh = false) => {
      if (!cubes || fresh) cubes = api.get("/v1/cubes", { query: { limit: 1000 }, signal });
      return cubes;
    },
    // Run fn every ms while the view is shown, never two at once.
    every: (ms, fn) => {
      let busy = false;
      const tick = safe(async () => {
        if (busy || signal.aborted) return;
        busy = true;
        try {
          await fn();
        } finally {
          busy = false;
        }
      });
      const timer = setInterval(tick, ms);
      signal.addEventListener("abort", () => clearInterval(timer), { once: true });
    },
  };
}

async function route() {
  if (!me) return;
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  banner("");
  const [name, args] = parse(location.hash);
  const view = VIEWS[name];
  if (!view) {
    location.hash = "#/cubes";
    return;
  }
  const [title, render] = view;
  document.title = `${title} · memos-ray`;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "cube" && a.dataset.view === "cubes"));
  }
  const root = $("view");
  root.dataset.view = name;
  clear(root, h("p", { class: "hint loading" }, "Loading…"));
  try {
    await render(context(controller), ...args);
  } catch (err) {
    report(err, controller);
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  const button = $("sign-in");
  button.disabled = true;
  try {
    const caller = await api.get("/v1/whoami", { key });
    setKey(key);
    $("key").value = "";
    showApp(caller);
  } catch (err) {
    const why = err instanceof ApiError ? `${err.message} (${err.code})` : String(err && err.message ? err.message : err);
    showSignIn(`Not signed in: ${why}`);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  $("signin-form").addEventListener("submit", (e) => {
    signIn(e).catch((err) => showSignIn(`Not signed in: ${err.message || err}`));
  });
  $("sign-out").addEventListener("click", () => {
    clearKey();
    showSignIn("Signed out.");
  });
  window.addEventListener("hashchange", () => {
    route().catch((err) => report(err, current));
  });
  const key = getKey();
  if (!key) {
    showSignIn("");
    return;
  }
  try {
    showApp(await api.get("/v1/whoami"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) clearKey();
    showSignIn(`Not signed in: ${err.message || err}`);
  }
}

start();
