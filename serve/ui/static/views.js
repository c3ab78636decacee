// The data views: cubes, a cube's memories (with a memory's versions and provenance), search, audit.
// Each view is `async (ctx, ...hashArgs)` and renders into ctx.root; ctx is the app's (see app.js).

import { api, seg } from "./api.js";
import { bytes, clear, denied, facts, h, link, note, num, pill, short, table, tags, when } from "./dom.js";

export const cubeHref = (id) => `#/cube/${seg(id)}`;
export const memoryHref = (cube, id) => `#/cube/${seg(cube)}/memory/${seg(id)}`;

// A <select id="cube-picker"> over the caller's cubes; onPick(id) when it changes. `all` adds a first
// option for "every cube" (value ""). Resolves to [element, the chosen id].
export async function cubePicker(ctx, chosen, onPick, { all = null } = {}) {
  const { cubes } = await ctx.cubes();
  const select = h("select", { id: "cube-picker", "aria-label": "cube" });
  if (all) select.append(h("option", { value: "" }, all));
  for (const c of cubes) select.append(h("option", { value: c.id }, c.name ? `${c.id} — ${c.name}` : c.id));
  const pick = chosen ?? (all ? "" : cubes.length ? cubes[0].id : null);
  if (pick !== null) select.value = pick;
  select.addEventListener("change", () => onPick(select.value));
  const wrap = h("label", { class: "picker" }, "Cube ", select);
  if (!cubes.length) wrap.append(h("span", { class: "hint" }, " (no cubes readable with this key)"));
  return [wrap, pick];
}

export async function cubesView(ctx) {
  const { cubes, total } = await ctx.cubes(true);
  clear(
    ctx.root,
    h("h1", {}, "Cubes"),
    h("p", { class: "hint" }, `${total} cube${total === 1 ? "" : "s"} readable by ${ctx.me.principal}`),
    table(
      "cubes",
      [
        ["Cube", (c) => link(cubeHref(c.id), c.id, { class: "cube-link" })],
        ["Name", (c) => c.name],
        ["Owner", (c) => c.owner],
        ["Memories", (c) => String(c.memory_count)],
        ["Text", (c) => bytes(c.text_bytes)],
        ["Seq", (c) => String(c.seq)],
        ["Shared with", (c) => c.grants.map((g) => `${g.principal}:${g.role}`).join(", ")],
        ["Updated", (c) => when(c.updated_at)],
      ],
      cubes,
      { rowAttrs: (c) => ({ "data-id": c.id }), empty: "No cubes yet: create one with the API or the CLI." },
    ),
  );
}

const STATES = ["active", "archived", "expired", "merged", "superseded", "deleted"];
const KINDS = ["fact", "dialogue", "document", "preference", "event", "note"];
const PAGE = 50;

function usageCells(usage) {
  const by = new Map((usage?.memories || []).map((u) => [u.memory_id, u]));
  const working = new Set(usage?.working_set || []);
  const of = (m) => by.get(m.id) || {};
  return [
    ["Retrievals", (m) => String(of(m).retrievals ?? 0)],
    ["Prompt uses", (m) => String(of(m).prompt_uses ?? 0)],
    ["Prefix uses", (m) => String(of(m).prefix_uses ?? 0)],
    ["Heat", (m) => num(of(m).heat ?? 0, 2)],
    ["Last used", (m) => when(of(m).last_used_at)],
    ["Working set", (m) => (working.has(m.id) ? "yes" : "")],
  ];
}

export async function cubeView(ctx, cubeId, sub, memoryId) {
  const meta = await api.get(`/v1/cubes/${seg(cubeId)}`, { signal: ctx.signal });
  const filters = ctx.keep(`filters:${cubeId}`, () => ({ states: ["active"], kind: "", tag: "", offset: 0 }));
  const query = { offset: filters.offset, limit: PAGE, state: filters.states, kind: filters.kind, tag: filters.tag };
  const [list, usage] = await Promise.all([
    api.get(`/v1/cubes/${seg(cubeId)}/memories`, { query, signal: ctx.signal }),
    api.get(`/v1/cubes/${seg(cubeId)}/usage`, { query: { limit: 1000 }, signal: ctx.signal }).catch((e) => e),
  ]);
  const usageOk = usage && !(usage instanceof Error);

  const stateBoxes = STATES.map((s) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", value: s, checked: filters.states.includes(s), class: "state-filter" }), s),
  );
  const kindSel = h("select", { id: "kind-filter" }, h("option", { value: "" }, "any kind"), KINDS.map((k) => h("option", { value: k }, k)));
  kindSel.value = filters.kind;
  const tagIn = h("input", { id: "tag-filter", type: "text", placeholder: "tag", value: filters.tag, maxlength: 64 });
  const apply = (offset = 0) => {
    const states = stateBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    Object.assign(filters, { states: states.length ? states : ["active"], kind: kindSel.value, tag: tagIn.value.trim(), offset });
    ctx.refresh();
  };
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(0); } },
    stateBoxes, kindSel, tagIn, h("button", { type: "submit", id: "filter-go" }, "Filter"));

  const columns = [
    ["Memory", (m) => link(memoryHref(cubeId, m.id), m.id, { class: "memory-link" })],
    ["Text", (m) => short(m.text, 120)],
    ["Kind", (m) => m.kind],
    ["State", (m) => pill(m.state)],
    ["Tags", (m) => tags(m.tags)],
    ["Versions", (m) => h("span", { class: "versions" }, String(m.version))],
    ["Author", (m) => m.provenance.author],
    ["Source", (m) => m.provenance.source_type],
    ["Updated", (m) => when(m.updated_at)],
    ...(usageOk ? usageCells(usage) : []),
  ];
  const pager = h("p", { class: "pager" },
    `${list.total} memor${list.total === 1 ? "y" : "ies"}; showing ${list.items.length ? list.offset + 1 : 0}–${list.offset + list.items.length} `,
    list.offset > 0 ? h("button", { type: "button", onclick: () => apply(Math.max(0, list.offset - PAGE)) }, "Previous") : null,
    list.offset + list.items.length < list.total ? h("button", { type: "button", onclick: () => apply(list.offset + PAGE) }, "Next") : null,
  );
  const detail = h("section", { id: "memory-detail-slot" });
  clear(
    ctx.root,
    h("h1", {}, "Cube ", h("span", { id: "cube-id" }, meta.id), meta.name ? h("span", { class: "sub" }, ` ${meta.name}`) : null),
    h("nav", { class: "subnav" },
      link(`#/search/${seg(cubeId)}`, "Search"), link(`#/audit/${seg(cubeId)}`, "Audit"),
      link(`#/scheduler/${seg(cubeId)}`, "Scheduler"), link(`#/adapters/${seg(cubeId)}`, "Adapters"),
      link(`#/changes/${seg(cubeId)}`, "Changes")),
    facts([
      ["Description", meta.description], ["Owner", meta.owner],
      ["Shared with", meta.grants.map((g) => `${g.principal} (${g.role})`).join(", ") || "nobody"],
      ["Memories", String(meta.memory_count)], ["Text", bytes(meta.text_bytes)], ["Seq", String(meta.seq)],
      ["Quotas", `${meta.quotas.max_memories ?? "∞"} memories, ${meta.quotas.max_bytes ? bytes(meta.quotas.max_bytes) : "∞"}`],
      ["Lifecycle", meta.lifecycle ? JSON.stringify(meta.lifecycle) : "server default"],
      ["Created", when(meta.created_at)], ["Updated", when(meta.updated_at)],
    ], { id: "cube-meta" }),
    usageOk
      ? facts([["Chats", String(usage.chats)], ["Last chat", when(usage.last_chat_at)],
        ["Working set", `${usage.working_set.length} memories`], ["Churn", String(usage.churn)]], { id: "cube-usage" })
      : note(usage),
    h("h2", {}, "Memories"),
    form,
    table("memories", columns, list.items, { rowAttrs: (m) => ({ "data-id": m.id, class: m.id === memoryId ? "selected" : null }), empty: "No memories match." }),
    pager,
    detail,
  );
  if (sub === "memory" && memoryId) await memoryDetail(ctx, detail, cubeId, memoryId, usageOk ? usage : null);
}

function provenance(p, attrs = {}) {
  return facts([
    ["Author", p.author], ["Source type", p.source_type], ["Source id", p.source_id],
    ["Conversation", p.conversation_id], ["Speaker", p.speaker], ["Role", p.role],
    ["Derived from", p.derived_from.map((r) => `${r.memory_id} v${r.version}`).join(", ")],
    ["Redactions", Object.entries(p.redactions).map(([k, v]) => `${k}: ${v}`).join(", ")],
  ], attrs);
}

async function memoryDetail(ctx, slot, cubeId, memoryId, usage) {
  let item;
  let history;
  try {
    [item, history] = await Promise.all([
      api.get(`/v1/cubes/${seg(cubeId)}/memories/${seg(memoryId)}`, { signal: ctx.signal }),
      api.get(`/v1/cubes/${seg(cubeId)}/memories/${seg(memoryId)}/history`, { signal: ctx.signal }),
    ]);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    clear(slot, h("section", { id: "memory-detail" }, h("h2", {}, `Memory ${memoryId}`), err.denied ? denied(err) : note(err)));
    return;
  }
  const use = (usage?.memories || []).find((u) => u.memory_id === memoryId);
  const refs = (list) => list.map((r) => (typeof r === "string" ? r : `${r.memory_id} v${r.version}`)).join(", ");
  clear(slot, h("section", { id: "memory-detail", "data-id": item.id },
    h("h2", {}, "Memory ", h("code", {}, item.id), " ", pill(item.state)),
    h("p", { class: "memory-text" }, item.text),
    facts([
      ["Versions", h("span", { id: "version-count" }, String(history.length))], ["Current version", String(item.version)],
      ["Kind", item.kind], ["Tags", tags(item.tags)], ["Seq", String(item.seq)], ["Context", item.context],
      ["Said at", when(item.said_at)], ["Created", when(item.created_at)], ["Updated", when(item.updated_at)],
      ["Valid", item.valid_from || item.valid_to ? `${when(item.valid_from) || "always"} → ${when(item.valid_to) || "now"}` : ""],
      ["Supersedes", item.supersedes.join(", ")], ["Superseded by", item.superseded_by],
      ["Merged into", item.merged_into], ["Merged from", refs(item.merged_from)],
      ["Metadata", Object.keys(item.metadata).length ? JSON.stringify(item.metadata) : ""],
    ]),
    h("h3", {}, "Provenance"),
    provenance(item.provenance, { id: "provenance" }),
    h("h3", {}, "Usage"),
    use
      ? facts([["Retrievals", String(use.retrievals)], ["Prompt uses", String(use.prompt_uses)], ["Prefix uses", String(use.prefix_uses)],
        ["Heat", num(use.heat, 3)], ["Last used", when(use.last_used_at)], ["Agents", use.agents.join(", ")]], { id: "memory-usage" })
      : h("p", { class: "hint", id: "memory-usage" }, "Not used by a search or chat yet."),
    h("h3", {}, "History"),
    table("versions", [
      ["Version", (v) => String(v.version)],
      ["Seq", (v) => String(v.seq)],
      ["State", (v) => pill(v.state)],
      ["Text", (v) => v.text],
      ["Kind", (v) => v.kind],
      ["Tags", (v) => tags(v.tags)],
      ["Author", (v) => v.provenance.author],
      ["Source", (v) => [v.provenance.source_type, v.provenance.source_id, v.provenance.speaker].filter(Boolean).join(" · ")],
      ["Written", (v) => when(v.updated_at)],
    ], [...history].reverse(), { rowAttrs: (v) => ({ "data-version": String(v.version) }) }),
  ));
  slot.scrollIntoView({ block: "start" });
}

export async function searchView(ctx, cubeId) {
  const [picker, chosen] = await cubePicker(ctx, cubeId ?? "", (id) => ctx.go(id ? `#/search/${seg(id)}` : "#/search"), { all: "every cube I may read" });
  const last = ctx.keep("search", () => ({ query: "", mode: "hybrid", top_k: 10 }));
  const q = h("input", { id: "query", type: "search", placeholder: "what to look for", value: last.query, required: true, maxlength: 4096 });
  const mode = h("select", { id: "mode" }, ["hybrid", "dense", "bm25"].map((m) => h("option", { value: m }, m)));
  mode.value = last.mode;
  const topK = h("input", { id: "top-k", type: "number", min: 1, max: 200, value: String(last.top_k) });
  const out = h("section", { id: "results-slot" });
  const run = async () => {
    Object.assign(last, { query: q.value.trim(), mode: mode.value, top_k: Number(topK.value) || 10 });
    if (!last.query) return;
    clear(out, h("p", { class: "hint" }, "Searching…"));
    const body = { query: last.query, mode: last.mode, top_k: last.top_k };
    try {
      const res = chosen
        ? await api.post(`/v1/cubes/${seg(chosen)}/search`, body, { signal: ctx.signal })
        : await api.post("/v1/search", body, { signal: ctx.signal });
      clear(out, renderHits(res));
    } catch (err) {
      if (err.name === "AbortError") return;
      clear(out, err.denied ? denied(err) : note(err));
    }
  };
  const form = h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); ctx.safe(run)(); } },
    picker, q, mode, h("label", {}, "top ", topK), h("button", { type: "submit", id: "search-go" }, "Search"));
  clear(ctx.root, h("h1", {}, "Search"), form, out);
  if (last.query) await run();
}

function renderHits(res) {
  const list = h("ol", { id: "results", class: "results" });
  for (const hit of res.hits) {
    const m = hit.memory;
    list.append(h("li", { class: "result", "data-id": m.id, "data-score": String(hit.score) },
      h("span", { class: "score", title: "score" }, num(hit.score)),
      h("span", { class: "scores" },
        hit.dense_score !== null && hit.dense_score !== undefined ? ` dense ${num(hit.dense_score)}` : "",
        hit.bm25_score !== null && hit.bm25_score !== undefined ? ` bm25 ${num(hit.bm25_score)}` : ""),
      h("p", { class: "result-text" }, m.text),
      h("p", { class: "hint" }, link(memoryHref(m.cube_id, m.id), `${m.cube_id}/${m.id}`), ` v${m.version} · ${m.kind} · ${m.state} `, tags(m.tags)),
    ));
  }
  return h("div", {},
    h("p", { class: "hint", id: "search-meta" }, `${res.hits.length} hit${res.hits.length === 1 ? "" : "s"} in ${num(res.took_ms, 1)} ms over ${res.cube_ids.length} cube${res.cube_ids.length === 1 ? "" : "s"}`),
    res.hits.length ? list : h("div", {}, list, h("p", { class: "empty" }, "Nothing found.")));
}

export async function auditView(ctx, cubeId) {
  const admin = ctx.me.admin;
  const [picker, chosen] = await cubePicker(ctx, cubeId ?? null, (id) => ctx.go(id ? `#/audit/${seg(id)}` : "#/audit"),
    { all: admin ? "every cube (administrator)" : null });
  const f = ctx.keep("audit", () => ({ action: "", result: "", principal: "" }));
  const action = h("input", { id: "audit-action", placeholder: "action or prefix (memory.)", value: f.action });
  const result = h("select", { id: "audit-result" }, ["", "ok", "denied", "error"].map((r) => h("option", { value: r }, r || "any result")));
  result.value = f.result;
  const principal = h("input", { id: "audit-principal", placeholder: "principal", value: f.principal });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    Object.assign(f, { action: action.value.trim(), result: result.value, principal: principal.value.trim() });
    ctx.refresh();
  } }, picker, action, result, principal, h("button", { type: "submit" }, "Filter"));
  const slot = h("section", { id: "audit-slot" });
  clear(ctx.root, h("h1", {}, "Audit log"), h("p", { class: "hint" },
    admin ? "Every record, or one cube's." : "A cube's records (its mutations and the denied accesses to it): for its admins."), form, slot);
  if (chosen === null) {
    clear(slot, h("p", { class: "empty" }, "No cube to show."));
    return;
  }
  const path = chosen ? `/v1/cubes/${seg(chosen)}/audit` : "/v1/audit";
  const records = [];
  const load = async (after) => {
    const page = await api.get(path, { query: { ...f, after_seq: after, limit: 200 }, signal: ctx.signal });
    records.push(...page.records);
    const more = page.next_after_seq !== null && page.next_after_seq !== undefined;
    clear(slot,
      table("audit", [
        ["Seq", (r) => String(r.seq)], ["At", (r) => when(r.at)], ["Principal", (r) => r.principal ?? "(no key)"],
        ["Action", (r) => r.action], ["Result", (r) => pill(r.result)], ["Status", (r) => String(r.status)],
        ["Cube", (r) => r.cube_id ?? ""], ["Memory", (r) => r.memory_id ?? ""],
        ["Request", (r) => `${r.method} ${r.path}`],
        ["Details", (r) => (Object.keys(r.details).length ? short(JSON.stringify(r.details), 140) : "")],
      ], records, { rowAttrs: (r) => ({ "data-seq": String(r.seq), "data-action": r.action }), empty: "No records." }),
      more ? h("button", { type: "button", id: "audit-more", onclick: ctx.safe(() => load(page.next_after_seq)) }, "More") : null);
  };
  try {
    await load(0);
  } catch (err) {
    if (err.name === "AbortError" || !err.denied) throw err;
    clear(slot, denied(err));
  }
}
