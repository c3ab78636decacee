// The views that follow the service as it runs: the scheduler's view (what lives where), adapters and
// training jobs (polled every second while one runs), and a cube's change feed (streamed).

import { ApiError, api, seg, stream } from "./api.js";
import { bytes, clear, denied, facts, h, link, note, num, pill, short, table, when } from "./dom.js";
import { cubeHref, cubePicker, memoryHref } from "./views.js";

function meter(used, budget, id) {
  const m = h("meter", { min: 0, max: budget || 1, value: used || 0, id });
  return h("span", { class: "budget" }, m, ` ${budget ? Math.round((100 * (used || 0)) / budget) : 0}%`);
}

async function clusterSection(ctx) {
  let status;
  try {
    status = await api.get("/v1/status", { signal: ctx.signal });
  } catch (err) {
    if (err.name === "AbortError" || !(err instanceof ApiError) || err.status !== 403) throw err;
    return h("section", { id: "cluster" }, h("h2", {}, "Workers, caches and budgets"), note(err),
      h("p", { class: "hint" }, "What lives on which worker spans every tenant: an administrator's key shows it."));
  }
  const d = status.directory;
  const e = status.embedder;
  const s = status.scheduler;
  const parts = [
    h("h2", {}, "Cluster"),
    facts([
      ["Version", status.version],
      ["Cubes", `${d.cubes} (${d.live} live of ${d.max_live}, ${d.spares} spare actors)`],
      ["Activations", `${d.activations} (p50 ${num(d.activation_p50_s, 2)} s, max ${num(d.activation_max_s, 2)} s), ${d.passivations} passivations`],
      ["Embedder", `${e.requests} requests, ${e.sentences} sentences, mean batch ${num(e.mean_batch, 1)}, busy ${num(e.busy_s, 1)} s`],
    ], { id: "cluster-facts" }),
  ];
  if (!s) {
    parts.push(h("p", { class: "note", id: "workers-pending" },
      "The model workers are not started yet (they start in the background; the first chat waits for them)."));
    return h("section", { id: "cluster" }, parts);
  }
  parts.push(
    h("h2", {}, "Budgets"),
    facts([
      ["Policy", s.enabled ? "on" : "off (pinned prefixes only)"],
      ["Break-even", `${s.break_even_tokens} tokens`],
      ["KV on disk", h("span", {}, meter(s.disk_bytes, s.disk_budget, "disk-budget"), ` ${bytes(s.disk_bytes)} of ${bytes(s.disk_budget)}`)],
      ["Build CPU", h("span", {}, meter(s.build_s_window, s.build_s_budget, "build-budget"), ` ${num(s.build_s_window, 2)} s of ${num(s.build_s_budget, 2)} s per minute`)],
      ["Decisions", String(s.decisions)],
      ["Cubes with working sets", String(s.cubes_with_working_sets)],
    ], { id: "budgets" }),
    h("h2", {}, "Workers"),
    table("workers", [
      ["Worker", (w) => String(w.worker)],
      ["KV in memory", (w) => h("span", {}, meter(w.kv_bytes, w.kv_budget), ` ${bytes(w.kv_bytes)} of ${bytes(w.kv_budget)}`)],
      ["Resident caches", (w) => String(w.resident)],
      ["Adapters", (w) => w.adapters.join(", ") || "none"],
    ], s.workers, { rowAttrs: (w) => ({ "data-worker": String(w.worker) }), empty: "No workers." }),
    h("h2", {}, "KV caches"),
    table("caches", [
      ["Key", (c) => h("code", {}, short(c.key, 24))],
      ["Cubes", (c) => c.cube_ids.map((id) => link(cubeHref(id), id))],
      ["Tokens", (c) => String(c.tokens)],
      ["Size", (c) => bytes(c.bytes)],
      ["On workers", (c) => (c.workers.length ? c.workers.join(", ") : "disk only")],
      ["In use", (c) => String(c.in_use)],
      ["Built for", (c) => c.built_for],
      ["Last used", (c) => when(c.last_used_at)],
    ], s.caches, { rowAttrs: (c) => ({ "data-key": c.key }), empty: "No KV caches." }),
  );
  return h("section", { id: "cluster" }, parts);
}

async function cubeSection(ctx, cubeId) {
  const query = { cube_id: cubeId || null, limit: 50 };
  const [usage, decisions] = await Promise.all([
    cubeId ? api.get(`/v1/cubes/${seg(cubeId)}/usage`, { query: { limit: 50 }, signal: ctx.signal }).catch((e) => e) : null,
    api.get("/v1/scheduler/decisions", { query, signal: ctx.signal }).catch((e) => e),
  ]);
  for (const r of [usage, decisions]) if (r && r.name === "AbortError") throw r;
  const parts = [];
  if (usage instanceof Error) parts.push(note(usage));
  else if (usage) {
    parts.push(h("h2", {}, "Usage of ", link(cubeHref(cubeId), cubeId)),
      facts([["Chats", String(usage.chats)], ["Last chat", when(usage.last_chat_at)], ["Churn", String(usage.churn)],
        ["Working set (KV prefix)", usage.working_set.map((id) => link(memoryHref(cubeId, id), id))]], { id: "working-set" }),
      table("usage", [
        ["Memory", (u) => link(memoryHref(cubeId, u.memory_id), u.memory_id)],
        ["Retrievals", (u) => String(u.retrievals)], ["Prompt uses", (u) => String(u.prompt_uses)],
        ["Prefix uses", (u) => String(u.prefix_uses)], ["Heat", (u) => num(u.heat, 3)],
        ["Last used", (u) => when(u.last_used_at)], ["Agents", (u) => u.agents.join(", ")],
      ], usage.memories, { empty: "No memory of this cube used yet." }));
  }
  parts.push(h("h2", {}, "Decisions"));
  if (decisions instanceof Error) parts.push(note(decisions));
  else {
    parts.push(table("decisions", [
      ["Seq", (d) => String(d.seq)], ["At", (d) => when(d.at)], ["Kind", (d) => pill(d.kind)],
      ["Cube", (d) => d.cube_id ?? ""], ["Worker", (d) => (d.worker ?? "").toString()],
      ["Reason", (d) => d.reason], ["Figures", (d) => short(JSON.stringify(d.inputs), 160)],
    ], [...decisions.decisions].reverse(), { empty: "No decisions yet." }));
  }
  return h("section", { id: "cube-scheduling" }, parts);
}

export async function schedulerView(ctx, cubeId) {
  const admin = ctx.me.admin;
  const [picker, chosen] = await cubePicker(ctx, cubeId ?? (admin ? "" : null),
    (id) => ctx.go(id ? `#/scheduler/${seg(id)}` : "#/scheduler"), { all: admin ? "every cube (administrator)" : null });
  const body = h("div", { id: "scheduler-body" });
  const refresh = h("button", { type: "button", id: "scheduler-refresh" }, "Refresh");
  const stamp = h("span", { class: "hint", id: "scheduler-stamp" });
  clear(ctx.root, h("section", { id: "scheduler" }, h("h1", {}, "Scheduler"),
    h("p", { class: "hint" }, "What lives where: KV caches, adapters and workers, the budgets they use, and the MemScheduler's decisions."),
    h("div", { class: "filters" }, picker, refresh, stamp), body));
  const load = async () => {
    const [cluster, cube] = await Promise.all([clusterSection(ctx), cubeSection(ctx, chosen)]);
    clear(body, cluster, cube);
    stamp.textContent = ` updated ${when(new Date().toISOString())}`;
  };
  refresh.addEventListener("click", ctx.safe(load));
  await load();
  ctx.every(5000, load);
}

// ------------------------------------------------------------------ adapters and training jobs

const JOBS = "memos-ray.jobs"; // no route lists a cube's jobs: the ones started from this tab are kept
const DONE = new Set(["succeeded", "failed"]);

function keptJobs() {
  try {
    return JSON.parse(sessionStorage.getItem(JOBS) || "[]");
  } catch {
    return [];
  }
}

function keepJob(job) {
  const jobs = keptJobs().filter((j) => j.id !== job.id);
  jobs.unshift({ id: job.id, cube_id: job.cube_id });
  sessionStorage.setItem(JOBS, JSON.stringify(jobs.slice(0, 50)));
}

function jobItem(job, polls) {
  const ev = job.evaluation;
  return h("li", { class: "job", "data-id": job.id, "data-state": job.state, "data-polls": String(polls) },
    h("div", { class: "job-head" }, h("code", {}, job.id), " ", pill(job.state), " ",
      h("progress", { max: 100, value: job.percent, class: "job-progress" }),
      h("span", { class: "job-percent" }, ` ${num(job.percent, 0)}%`),
      ` step ${job.step}/${job.steps}`, job.loss !== null && job.loss !== undefined ? ` · loss ${num(job.loss, 4)}` : ""),
    facts([
      ["Memories", String(job.memories)], ["By", job.created_by], ["Why", job.reason],
      ["Created", when(job.created_at)], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)],
      ["Adapter", job.adapter_id], ["Error", job.error],
      ["Exam", ev ? `${ev.passed ? "passed" : "failed"}: ${ev.answered}/${ev.questions} answered (base ${ev.base_answered}); ${ev.reason}` : ""],
    ]));
}

function adapterTable(ctx, cubeId, listing, reload) {
  const act = (adapterId) => ctx.safe(async () => {
    await api.put(`/v1/cubes/${seg(cubeId)}/adapters/active`, { adapter_id: adapterId }, { signal: ctx.signal });
    await reload();
  });
  const drop = (adapterId) => ctx.safe(async () => {
    if (!window.confirm(`Delete adapter ${adapterId} from disk and every worker?`)) return;
    await api.del(`/v1/cubes/${seg(cubeId)}/adapters/${seg(adapterId)}`, { signal: ctx.signal });
    await reload();
  });
  return h("div", {},
    h("p", {}, "Active: ", h("strong", { id: "active-adapter" }, listing.active ?? "base model"), " ",
      listing.active ? h("button", { type: "button", onclick: act(null) }, "Use the base model") : null),
    table("adapter-list", [
      ["Adapter", (a) => h("code", {}, a.id)], ["Version", (a) => String(a.version)],
      ["State", (a) => [a.id === listing.active ? pill("active") : null, a.stale ? pill("stale") : null]],
      ["LoRA", (a) => `r${a.settings.rank} α${a.settings.alpha} · ${a.settings.target_modules.join(",")}`],
      ["Trained", (a) => `${a.metrics.steps} steps, ${a.metrics.examples} memories, ${num(a.metrics.seconds, 1)} s`],
      ["Loss", (a) => `${num(a.metrics.loss_first, 3)} → ${num(a.metrics.loss_last, 3)}`],
      ["NLL", (a) => `${num(a.metrics.nll_before, 3)} → ${num(a.metrics.nll_after, 3)}`],
      ["Exam", (a) => (a.evaluation ? `${a.evaluation.passed ? "passed" : "failed"} ${a.evaluation.answered}/${a.evaluation.questions}` : "")],
      ["Sources", (a) => String(a.sources.length)], ["Size", (a) => bytes(a.bytes)],
      ["Base", (a) => `${a.base_model.name} (${a.base_model.dtype})`],
      ["Created", (a) => `${when(a.created_at)} by ${a.created_by}`],
      ["", (a) => [a.id !== listing.active ? h("button", { type: "button", class: "activate", onclick: act(a.id) }, "Activate") : null,
        h("button", { type: "button", class: "delete", onclick: drop(a.id) }, "Delete")]],
    ], listing.adapters, { rowAttrs: (a) => ({ "data-id": a.id, title: a.stale_reason || "" }), empty: "No adapters yet: train one below." }));
}

export async function adaptersView(ctx, cubeId) {
  const [picker, chosen] = await cubePicker(ctx, cubeId ?? null, (id) => ctx.go(`#/adapters/${seg(id)}`));
  const listSlot = h("div", { id: "adapter-slot" });
  const jobs = h("ol", { id: "jobs", class: "jobs" });
  const steps = h("input", { id: "train-steps", type: "number", min: 1, max: 5000, value: "24" });
  const rank = h("input", { id: "train-rank", type: "number", min: 1, max: 64, value: "16" });
  const examine = h("input", { id: "train-examine", type: "checkbox", checked: true });
  const activate = h("input", { id: "train-activate", type: "checkbox", checked: true });
  const train = h("button", { type: "submit", id: "train" }, "Train an adapter");
  const trainNote = h("p", { id: "train-note", class: "hint" });
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); ctx.safe(start)(); } },
    h("label", {}, "steps ", steps), h("label", {}, "rank ", rank),
    h("label", { class: "check" }, examine, "examine after"), h("label", { class: "check" }, activate, "activate when ready"), train);
  clear(ctx.root, h("section", { id: "adapters", "data-cube": chosen ?? "" },
    h("h1", {}, "Adapters", chosen ? h("span", { class: "sub" }, ` of ${chosen}`) : null),
    h("div", { class: "filters" }, picker), listSlot,
    h("h2", {}, "Train"), h("p", { class: "hint" }, "From the cube's active facts; the job runs off the request path."), form, trainNote,
    h("h2", {}, "Training jobs"), h("p", { class: "hint" }, "Jobs started from this tab, followed every second while they run."), jobs));
  if (!chosen) {
    clear(listSlot, h("p", { class: "empty" }, "No cube to show."));
    train.disabled = true;
    return;
  }
  const reload = async () => {
    try {
      clear(listSlot, adapterTable(ctx, chosen, await api.get(`/v1/cubes/${seg(chosen)}/adapters`, { signal: ctx.signal }), reload));
    } catch (err) {
      if (err.name === "AbortError" || !err.denied) throw err;
      clear(listSlot, denied(err));
      train.disabled = true;
    }
  };
  const shown = new Map(); // job id -> {el, polls, done}
  const follow = (job) => {
    const prev = shown.get(job.id);
    const polls = prev ? prev.polls + 1 : 1;
    const el = jobItem(job, polls);
    if (prev) prev.el.replaceWith(el);
    else jobs.prepend(el);
    const done = DONE.has(job.state);
    shown.set(job.id, { el, polls, done });
    return done && prev && !prev.done; // it finished since the last look
  };
  const poll = async () => {
    const open = [...shown.entries()].filter(([, s]) => !s.done).map(([id]) => id);
    let finished = false;
    for (const id of open) {
      try {
        finished = follow(await api.get(`/v1/jobs/${seg(id)}`, { signal: ctx.signal })) || finished;
      } catch (err) {
        if (err.name === "AbortError") throw err;
        const s = shown.get(id);
        s.done = true;
        s.el.append(note(err));
      }
    }
    if (finished) await reload();
  };
  async function start() {
    trainNote.textContent = "";
    const settings = { steps: Number(steps.value) || 24, rank: Number(rank.value) || 16, examine: examine.checked };
    settings.alpha = 2 * settings.rank;
    try {
      const job = await api.post(`/v1/cubes/${seg(chosen)}/adapters`, { settings, activate: activate.checked }, { signal: ctx.signal });
      keepJob(job);
      follow(job);
      trainNote.textContent = `Started ${job.id} on ${job.memories} memories.`;
    } catch (err) {
      if (err.name === "AbortError") return;
      clear(trainNote, note(err));
    }
  }
  await reload();
  for (const { id } of keptJobs().filter((j) => j.cube_id === chosen).reverse()) {
    try {
      follow(await api.get(`/v1/jobs/${seg(id)}`, { signal: ctx.signal }));
    } catch (err) {
      if (err.name === "AbortError") throw err; // a job the service no longer knows (it restarted): not shown
    }
  }
  ctx.every(1000, poll);
}

// ------------------------------------------------------------------ the change feed

const MAX_SHOWN = 200;

function changeItem(cubeId, ev) {
  const m = ev.memory;
  return h("li", { class: "change", "data-seq": String(ev.seq), "data-op": ev.op, "data-id": ev.memory_id },
    h("span", { class: "seq" }, `#${ev.seq}`), " ", pill(ev.op), " ",
    link(memoryHref(cubeId, ev.memory_id), ev.memory_id), ev.version ? ` v${ev.version}` : "",
    ev.author ? ` by ${ev.author}` : "", ` at ${when(ev.at)}`,
    m ? h("p", { class: "change-text" }, short(m.text, 240)) : null);
}

export async function changesView(ctx, cubeId) {
  const [picker, chosen] = await cubePicker(ctx, cubeId ?? null, (id) => ctx.go(`#/changes/${seg(id)}`));
  const status = h("p", { id: "changes-status", class: "status", "data-state": "idle" }, "Not connected.");
  const list = h("ol", { id: "changes", class: "changes", reversed: true });
  const from = h("input", { id: "changes-after", type: "number", min: 0, placeholder: "replay after seq" });
  const replay = h("button", { type: "button", id: "changes-replay" }, "Replay");
  clear(ctx.root, h("h1", {}, "Change feed", chosen ? h("span", { class: "sub" }, ` of ${chosen}`) : null),
    h("div", { class: "filters" }, picker, from, replay),
    h("p", { class: "hint" }, "New versions as agents write them, newest first (Server-Sent Events over fetch)."), status, list);
  if (!chosen) {
    status.textContent = "No cube to follow.";
    return;
  }
  const say = (state, text) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  let last = null; // the last seq seen: a reconnect resumes after it, so nothing is missed
  let feed = null; // the running connection's AbortController
  const connect = async (after) => {
    if (feed) feed.abort();
    feed = new AbortController();
    const mine = feed;
    const signal = AbortSignal.any ? AbortSignal.any([ctx.signal, mine.signal]) : mine.signal;
    ctx.signal.addEventListener("abort", () => mine.abort(), { once: true });
    let cursor = after;
    while (!signal.aborted) {
      say("connecting", cursor === null ? "Connecting…" : `Connecting (after seq ${cursor})…`);
      let ended = null;
      try {
        await stream(`/v1/cubes/${seg(chosen)}/changes`, {
          query: { after_seq: cursor }, signal,
          onEvent: ({ event, data }) => {
            if (event === "subscribed") {
              last = last === null ? data.seq : last;
              say("live", `Live: ${data.cube_id} at seq ${data.seq}.`);
            } else if (event === "change") {
              last = data.seq;
              list.prepend(changeItem(chosen, data));
              while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
            } else if (event === "error") {
              ended = data && data.error ? data.error : { code: "error", message: String(data) };
            }
          },
        });
      } catch (err) {
        if (err.name === "AbortError" || signal.aborted) return;
        if (err instanceof ApiError && err.status !== 0 && err.status !== 503) {
          if (err.denied) list.replaceWith(denied(err));
          say("ended", `Ended: ${err.message} (${err.code})`);
          return;
        }
        say("retrying", `Lost the feed (${err.message}); retrying…`);
      }
      if (ended) {
        say("ended", `Ended by the service: ${ended.message} (${ended.code})`);
        return;
      }
      cursor = last;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  replay.addEventListener("click", () => {
    const n = Number(from.value);
    if (from.value === "" || !Number.isInteger(n) || n < 0) return;
    list.replaceChildren();
    last = n;
    ctx.safe(connect)(n);
  });
  ctx.safe(connect)(null); // runs until the view is left (ctx.signal aborts it)
}
