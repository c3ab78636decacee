// Building the page from data without ever parsing it as HTML: every value goes in as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = String(value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else if (name === "checked") el.checked = Boolean(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function when(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function num(n, digits = 4) {
  return n === null || n === undefined ? "" : Number(n).toFixed(digits);
}

export function short(text, max = 160) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

// A table: columns are [header, (row) => cell content] pairs; rowAttrs(row) gives each <tr>'s attributes.
export function table(id, columns, rows, { rowAttrs, empty = "nothing yet" } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title))));
  const body = h("tbody");
  for (const row of rows) {
    const tr = h("tr", rowAttrs ? rowAttrs(row) : {});
    for (const [title, cell] of columns) {
      tr.append(h("td", { "data-col": title.toLowerCase().replace(/\W+/g, "-") }, cell(row)));
    }
    body.append(tr);
  }
  const t = h("table", { id, class: "grid" }, head, body);
  if (rows.length) return t;
  return h("div", { class: "table-wrap" }, t, h("p", { class: "empty" }, empty));
}

// Name/value pairs as a definition list.
export function facts(pairs, attrs = {}) {
  const dl = h("dl", { class: "facts", ...attrs });
  for (const [name, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(h("dt", {}, name), h("dd", {}, value));
  }
  return dl;
}

export function tags(list) {
  return (list || []).map((t) => h("span", { class: "tag" }, t));
}

export function pill(text, kind = text) {
  return h("span", { class: `pill pill-${String(kind).replace(/[^a-z0-9_-]/gi, "")}` }, text);
}

export function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

// What an error says, as a paragraph (inline, for a part of a view).
export function note(err, attrs = {}) {
  const code = err && err.code ? ` (${err.code})` : "";
  return h("p", { class: err && err.denied ? "note denied-note" : "note error", ...attrs }, `${err && err.message ? err.message : err}${code}`);
}

// The whole view refused: the server's message in #denied.
export function denied(err) {
  const status = err.status ? `${err.status} ` : "";
  return h(
    "section",
    { id: "denied", class: "denied", role: "alert" },
    h("h2", {}, err.status === 404 ? "Not available" : "Access denied"),
    h("p", { class: "denied-message" }, err.message),
    h("p", { class: "hint" }, `${status}${err.code}: this key's principal may not see this, or it does not exist.`),
  );
}
