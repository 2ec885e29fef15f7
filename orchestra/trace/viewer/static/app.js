// orchestra trace viewer: a single-page app over the JSON API of server.py.
//
// Safety rule: data from the store (queries, prompts, outputs, names) only ever reaches the
// page as text — through textContent, text nodes or setAttribute — never through innerHTML.
// Charts are SVG elements built one by one here; nothing is loaded from the network.
"use strict";

(function () {
  const app = document.getElementById("app");
  const SVG_NS = "http://www.w3.org/2000/svg";

  // Opened with ?token=… (a viewer beyond loopback): the server has set its cookie by now;
  // the token leaves the address bar and the history.
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname + location.hash);
  }

  // ------------------------------------------------------------------ DOM helpers
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "text") el.textContent = String(v);
      else if (k === "style") Object.assign(el.style, v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = !!v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function appendAll(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }
  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  // ------------------------------------------------------------------ formatting
  // Dollars: cents for large amounts, 4 decimals below $1, 3 significant digits below 1¢
  // (local and test models cost millionths of a dollar per call).
  function fmtUSD(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "—";
    if (x === 0) return "$0";
    const a = Math.abs(x);
    if (a >= 1) return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const decimals = a >= 0.01 ? 4 : Math.min(12, 2 - Math.floor(Math.log10(a)));
    let t = x.toFixed(decimals).replace(/0+$/, "");
    if ((t.split(".")[1] || "").length < 2) t = x.toFixed(2);
    return "$" + t;
  }
  function fmtInt(x) {
    if (x === null || x === undefined) return "—";
    return Math.round(x).toLocaleString("en-US");
  }
  function fmtDur(x) {
    if (x === null || x === undefined) return "—";
    if (x < 1) return Math.round(x * 1000) + " ms";
    if (x < 60) return x.toFixed(2) + " s";
    const m = Math.floor(x / 60);
    return m + "m " + Math.round(x - m * 60) + "s";
  }
  function pad(n) { return String(n).padStart(2, "0"); }
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function fmtTime(ts) {
    if (!ts) return "—";
    const d = new Date(ts * 1000);
    const year = d.getFullYear() === new Date().getFullYear() ? "" : " " + d.getFullYear();
    return MONTHS[d.getMonth()] + " " + d.getDate() + year + ", " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function ago(ts) {
    if (!ts) return "";
    const s = Date.now() / 1000 - ts;
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function short(text, n) {
    if (text === null || text === undefined) return "";
    const t = String(text).replace(/\s+/g, " ").trim();
    return t.length > n ? t.slice(0, n - 1) + "…" : t;
  }
  function shortId(id) { return id && id.length > 12 ? id.slice(0, 12) : id; }
  function asText(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : JSON.stringify(v, null, 2);
  }

  const STATUS_LABEL = { ok: "ok", budget: "stopped by budget", error: "error", running: "running", interrupted: "interrupted" };
  function statusBadge(status) {
    return h("span", { class: "badge status-" + (status || "unknown"), dataset: { status: status || "" } },
      STATUS_LABEL[status] || status || "unknown");
  }

  // A stable colour per model (or agent) name.
  const PALETTE = ["#6366f1", "#f59e0b", "#10b981", "#ec4899", "#0ea5e9", "#a855f7", "#84cc16",
    "#64748b", "#b45309"];
  // Each name keeps its hashed colour unless another name took it first (then the next free one),
  // so colours are stable across pages and two models on a page never share one.
  const colors = new Map();
  function colorFor(name) {
    name = String(name);
    if (colors.has(name)) return colors.get(name);
    let x = 2166136261;
    for (const ch of name) { x ^= ch.charCodeAt(0); x = Math.imul(x, 16777619); }
    const taken = new Set(colors.values());
    let i = Math.abs(x) % PALETTE.length;
    for (let k = 0; k < PALETTE.length && taken.has(PALETTE[i]); k++) i = (i + 1) % PALETTE.length;
    colors.set(name, PALETTE[i]);
    return PALETTE[i];
  }

  // ------------------------------------------------------------------ API
  async function api(path) {
    const res = await fetch(path, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const err = new Error((body && body.error) || (res.status + " " + res.statusText));
      err.status = res.status;
      throw err;
    }
    return body;
  }
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
    const t = p.toString();
    return t ? "?" + t : "";
  }

  // ------------------------------------------------------------------ routing
  let cleanup = null;
  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/runs";
    const [path, query] = raw.split("?");
    const segs = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { segs, params: new URLSearchParams(query || "") };
  }
  function go(hash) { location.hash = hash; }
  function route() {
    if (cleanup) { try { cleanup(); } catch (e) { /* ignore */ } cleanup = null; }
    const { segs, params } = parseHash();
    const page = segs[0] || "runs";
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", a.dataset.nav === page || (page === "run" && a.dataset.nav === "runs"));
    }
    clear(app);
    app.dataset.page = page;
    let result;
    if (page === "runs") result = runsPage(params);
    else if (page === "run" && segs[1]) result = runPage(segs[1]);
    else if (page === "compare") result = comparePage(segs[1], segs[2]);
    else if (page === "aggregates") result = aggregatesPage(params);
    else { app.appendChild(errorBox("No page " + JSON.stringify(location.hash) + ".")); return; }
    cleanup = result || null;
    window.scrollTo(0, 0);
  }
  window.addEventListener("hashchange", route);

  function errorBox(message) {
    return h("div", { class: "error-box", role: "alert" }, message);
  }
  function loading() { return h("div", { class: "loading" }, "Loading…"); }

  // A poller that runs while the tab is visible.
  function every(ms, fn) {
    let stopped = false, timer = null;
    async function tick() {
      if (stopped) return;
      if (!document.hidden) { try { await fn(); } catch (e) { /* next tick retries */ } }
      if (!stopped) timer = setTimeout(tick, ms);
    }
    timer = setTimeout(tick, ms);
    return () => { stopped = true; clearTimeout(timer); };
  }

  // ------------------------------------------------------------------ shared filters
  const FILTER_KEYS = ["search", "status", "policy", "pool"];
  function filterBar(params, facets, onChange, opts) {
    const bar = h("div", { class: "toolbar" });
    const search = h("input", {
      type: "search", class: "search", placeholder: "Search query, answer or run id",
      value: params.get("search") || "", "aria-label": "search", dataset: { filter: "search" },
    });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => onChange({ search: search.value.trim() }), 250);
    });
    bar.appendChild(search);
    function select(key, label, values, labels) {
      const sel = h("select", { "aria-label": label, dataset: { filter: key } },
        h("option", { value: "" }, "All " + label),
        values.map((v) => h("option", { value: v }, labels ? (labels[v] || v) : v)));
      sel.value = params.get(key) || "";
      if (sel.value !== (params.get(key) || "")) {
        sel.appendChild(h("option", { value: params.get(key) }, params.get(key)));
        sel.value = params.get(key);
      }
      sel.addEventListener("change", () => onChange({ [key]: sel.value }));
      return sel;
    }
    const statuses = ["ok", "budget", "error", "running", "interrupted"];
    bar.appendChild(select("status", "statuses", statuses, STATUS_LABEL));
    bar.appendChild(select("policy", "policies", (facets && facets.policy) || []));
    bar.appendChild(select("pool", "pools", (facets && facets.pool) || []));
    if (opts && opts.extra) appendAll(bar, [opts.extra]);
    return bar;
  }
  function withParams(base, params, changes) {
    const p = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) { if (v) p.set(k, v); else p.delete(k); }
    const t = p.toString();
    return base + (t ? "?" + t : "");
  }

  // ------------------------------------------------------------------ runs list
  const SORTABLE = { started_at: "Started", query: "Query", cost_usd: "Cost", calls: "Calls", rounds: "Rounds", duration_s: "Duration" };
  const selected = new Set(); // run ids ticked for comparison (kept across pages)

  function runsPage(params) {
    const size = Math.min(500, Math.max(1, parseInt(params.get("size") || "50", 10) || 50));
    const pageNo = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    const sort = params.get("sort") || "started_at";
    const order = params.get("order") || "desc";
    const filters = {};
    for (const k of FILTER_KEYS) filters[k] = params.get(k) || "";

    const compareBtn = h("button", { class: "btn", type: "button", dataset: { testid: "compare-selected" } });
    const aggLink = h("a", { class: "btn btn-ghost", href: withParams("#/aggregates", filtersOnly(params), {}) }, "Aggregates of selection →");
    function updateCompare() {
      compareBtn.textContent = "Compare selected (" + selected.size + "/2)";
      compareBtn.disabled = selected.size !== 2;
    }
    compareBtn.addEventListener("click", () => {
      const [a, b] = [...selected];
      go("#/compare/" + encodeURIComponent(a) + "/" + encodeURIComponent(b));
    });
    updateCompare();

    const head = h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Runs"), h("p", { class: "muted", id: "runs-count" }, "")),
      h("div", { class: "head-actions" }, h("span", { class: "live-dot", title: "refreshes every few seconds" }, "live"), aggLink, compareBtn));
    const barHost = h("div");
    const tableHost = h("div", { class: "card table-card" }, loading());
    const pagerHost = h("div", { class: "pager" });
    appendAll(app, [head, barHost, tableHost, pagerHost]);

    function change(changes) {
      const next = Object.assign({}, changes);
      if (!("page" in next)) next.page = "";
      go(withParams("#/runs", params, next));
    }

    api("/api/facets").then((facets) => {
      clear(barHost).appendChild(filterBar(params, facets, change));
    }).catch(() => { clear(barHost).appendChild(filterBar(params, null, change)); });

    let lastKey = "";
    async function load() {
      const data = await api("/api/runs" + qs(Object.assign({}, filters, {
        limit: size, offset: (pageNo - 1) * size, sort, order,
      })));
      const key = JSON.stringify(data);
      if (key === lastKey) return;
      lastKey = key;
      renderTable(data);
    }

    function sortHeader(key, label, cls) {
      const active = sort === key;
      const nextOrder = active && order === "desc" ? "asc" : "desc";
      return h("th", { class: (cls || "") + " sortable" + (active ? " sorted" : ""), "aria-sort": active ? (order === "asc" ? "ascending" : "descending") : "none" },
        h("a", { href: withParams("#/runs", params, { sort: key, order: nextOrder, page: "" }), dataset: { sort: key } },
          label, h("span", { class: "sort-ind" }, active ? (order === "asc" ? "▲" : "▼") : "↕")));
    }

    function renderTable(data) {
      document.getElementById("runs-count").textContent =
        fmtInt(data.total) + (data.total === 1 ? " run" : " runs") +
        (FILTER_KEYS.some((k) => filters[k]) ? " match the filters" : " in the store");
      const table = h("table", { class: "runs" },
        h("thead", null, h("tr", null,
          h("th", { class: "col-check" }, ""),
          sortHeader("started_at", "Started"),
          sortHeader("query", "Query", "col-query"),
          h("th", null, "Pool"), h("th", null, "Policy"),
          h("th", { class: "col-answer" }, "Answer"),
          sortHeader("cost_usd", "Cost", "num"),
          h("th", { class: "num" }, "Tokens"),
          sortHeader("calls", "Calls", "num"),
          sortHeader("rounds", "Rounds", "num"),
          sortHeader("duration_s", "Duration", "num"),
          h("th", null, "Status"))),
        h("tbody", null, data.runs.map(runRow)));
      const host = clear(tableHost);
      if (!data.runs.length) {
        host.appendChild(h("div", { class: "empty" }, data.total ? "No runs on this page." : "No runs match. Clear the filters, or run something: orchestra run \"…\""));
      }
      host.appendChild(table);
      renderPager(data);
    }

    function runRow(r) {
      const href = "#/run/" + encodeURIComponent(r.run_id);
      const box = h("input", { type: "checkbox", "aria-label": "select for comparison", checked: selected.has(r.run_id) });
      box.addEventListener("click", (e) => e.stopPropagation());
      box.addEventListener("change", () => {
        if (box.checked) {
          if (selected.size >= 2) { const first = selected.values().next().value; selected.delete(first); for (const b of tableHost.querySelectorAll("tr[data-run-id]")) if (b.dataset.runId === first) b.querySelector("input").checked = false; }
          selected.add(r.run_id);
        } else selected.delete(r.run_id);
        updateCompare();
      });
      const tr = h("tr", { dataset: { runId: r.run_id, status: r.status || "" }, class: r.status === "running" ? "is-running" : "" },
        h("td", { class: "col-check" }, box),
        h("td", { class: "nowrap", title: ago(r.started_at) }, fmtTime(r.started_at)),
        h("td", { class: "col-query" }, h("a", { href, title: r.query || "" }, short(r.query, 90))),
        h("td", null, r.pool || "—"),
        h("td", { class: "col-policy" }, h("span", { class: "tag", title: r.policy || "" }, r.policy || "—")),
        h("td", { class: "col-answer muted", title: short(r.answer, 500) }, short(r.answer, 60) || "—"),
        h("td", { class: "num", dataset: { costUsd: String(r.cost_usd) } }, fmtUSD(r.cost_usd)),
        h("td", { class: "num" }, fmtInt((r.input_tokens || 0) + (r.output_tokens || 0))),
        h("td", { class: "num" }, fmtInt(r.calls)),
        h("td", { class: "num" }, fmtInt(r.rounds)),
        h("td", { class: "num nowrap" }, fmtDur(r.duration_s)),
        h("td", null, statusBadge(r.status)));
      tr.addEventListener("click", (e) => { if (!e.target.closest("a,input")) go(href); });
      return tr;
    }

    function renderPager(data) {
      const pages = Math.max(1, Math.ceil(data.total / size));
      const first = data.total ? data.offset + 1 : 0;
      const last = data.offset + data.runs.length;
      const link = (label, p, disabled, testid) => disabled
        ? h("span", { class: "btn btn-small disabled", "aria-disabled": "true" }, label)
        : h("a", { class: "btn btn-small", href: withParams("#/runs", params, { page: p > 1 ? String(p) : "" }), dataset: { testid } }, label);
      const jump = h("input", { type: "number", min: "1", max: String(pages), value: String(pageNo), class: "page-input", "aria-label": "page" });
      jump.addEventListener("change", () => {
        const p = Math.min(pages, Math.max(1, parseInt(jump.value, 10) || 1));
        change({ page: p > 1 ? String(p) : "" });
      });
      const sizeSel = h("select", { "aria-label": "runs per page" }, [25, 50, 100, 200].map((n) => h("option", { value: String(n) }, n + " / page")));
      sizeSel.value = String(size);
      sizeSel.addEventListener("change", () => change({ size: sizeSel.value === "50" ? "" : sizeSel.value }));
      appendAll(clear(pagerHost), [
        h("span", { class: "range", dataset: { testid: "range" } }, fmtInt(first) + "–" + fmtInt(last) + " of " + fmtInt(data.total)),
        h("span", { class: "pager-links" },
          link("« First", 1, pageNo <= 1, "first"), link("‹ Prev", pageNo - 1, pageNo <= 1, "prev"),
          h("span", { class: "page-of" }, "Page ", jump, " of " + fmtInt(pages)),
          link("Next ›", pageNo + 1, pageNo >= pages, "next"), link("Last »", pages, pageNo >= pages, "last")),
        sizeSel,
      ]);
    }

    load().catch((e) => { clear(tableHost).appendChild(errorBox("Could not load runs: " + e.message)); });
    return every(2500, load);
  }
  function filtersOnly(params) {
    const p = new URLSearchParams();
    for (const k of FILTER_KEYS) if (params.get(k)) p.set(k, params.get(k));
    return p;
  }

  // ------------------------------------------------------------------ run detail
  // Fold events into a summary, as the store does (so a live page stays current).
  function foldSummary(run, ev) {
    const k = ev.kind;
    if (k === "run_started") {
      if (!ev.resumed || !run.started_at) Object.assign(run, { started_at: ev.ts, query: ev.query, pool: ev.pool, policy: ev.policy, budget: ev.budget || {}, meta: ev.meta || {} });
      Object.assign(run, { status: "running", finished_at: null, stop_reason: null });
    } else if (k === "call_finished") {
      run.cost_usd = (run.cost_usd || 0) + ev.cost_usd;
      run.input_tokens = (run.input_tokens || 0) + ev.input_tokens;
      run.output_tokens = (run.output_tokens || 0) + ev.output_tokens;
      run.calls = (run.calls || 0) + 1;
    } else if (k === "refined") {
      run.rounds = Math.max(run.rounds || 0, ev.round + 1);
      run.answer = ev.output;
    } else if (k === "run_finished") {
      Object.assign(run, { finished_at: ev.ts, status: ev.status, stop_reason: ev.stop_reason, answer: ev.answer, cost_usd: ev.cost_usd, input_tokens: ev.input_tokens, output_tokens: ev.output_tokens, calls: ev.calls, rounds: ev.rounds, duration_s: ev.duration_s });
    } else if (k === "error" && ev.fatal) {
      Object.assign(run, { status: "error", stop_reason: ("error: " + ev.message).slice(0, 500), finished_at: ev.ts });
    }
  }

  function runPage(runId) {
    const state = { run: null, events: [], seqs: new Set(), open: new Set(), closed: new Set(), source: null, stopPoll: null, stopTick: null, scheduled: false, ended: false };
    const host = h("div", null, loading());
    app.appendChild(host);

    function addEvents(evs) {
      let added = false;
      for (const ev of evs) {
        if (state.seqs.has(ev.seq)) continue;
        state.seqs.add(ev.seq);
        state.events.push(ev);
        foldSummary(state.run, ev);
        added = true;
      }
      if (added) {
        state.events.sort((a, b) => a.seq - b.seq);
        schedule();
      }
    }
    function schedule() {
      if (state.scheduled) return;
      state.scheduled = true;
      requestAnimationFrame(() => { state.scheduled = false; render(); });
    }
    function lastSeq() { return state.events.length ? state.events[state.events.length - 1].seq : -1; }

    function startLive() {
      const after = lastSeq();
      const url = "/api/runs/" + encodeURIComponent(state.run.run_id) + "/stream?after=" + after;
      if (!window.EventSource) { startPolling(); return; }
      let opened = false;
      const src = new EventSource(url);
      state.source = src;
      src.addEventListener("open", () => { opened = true; });
      src.addEventListener("trace", (m) => { addEvents([JSON.parse(m.data)]); });
      src.addEventListener("end", (m) => {
        src.close(); state.source = null; state.ended = true;
        try { ended(JSON.parse(m.data)); } catch (e) { /* keep */ }
        schedule();
      });
      src.addEventListener("error", () => {
        // EventSource reconnects by itself; when it gives up (or never connected), poll.
        if (src.readyState === EventSource.CLOSED || !opened) { src.close(); state.source = null; if (!state.ended) startPolling(); }
      });
    }
    function startPolling() {
      if (state.stopPoll) return;
      state.stopPoll = every(1000, async () => {
        const d = await api("/api/runs/" + encodeURIComponent(state.run.run_id) + "/events?after=" + lastSeq());
        addEvents(d.events);
        if (d.status !== "running" && !d.events.length) { ended(d); state.ended = true; state.stopPoll(); schedule(); }
      });
    }
    // How the run ended, as the server says: its status and, when its process is gone, why
    // and the command that resumes it.
    function ended(d) {
      state.run.status = d.status || state.run.status;
      if (d.status === "interrupted") Object.assign(state.run, { stop_reason: d.stop_reason, resume: d.resume });
    }

    api("/api/runs/" + encodeURIComponent(runId)).then((d) => {
      state.run = { run_id: d.run.run_id };
      addEvents(d.events);
      // The stored summary is the truth for finished runs (and for fields not in events).
      for (const [k, v] of Object.entries(d.run)) if (v !== null && v !== undefined) state.run[k] = v;
      render();
      if (state.run.status === "running") {
        startLive();
        // Running bars and the duration grow with the clock, not only with events.
        state.stopTick = every(1000, async () => { if (state.run.status === "running") schedule(); else state.stopTick(); });
      }
    }).catch((e) => {
      clear(host).appendChild(errorBox(e.status === 404 ? "No run " + JSON.stringify(runId) + " in this store." : "Could not load the run: " + e.message));
    });

    function render() {
      const scroll = window.scrollY;
      clear(host).appendChild(runView(state));
      window.scrollTo(0, scroll);
    }

    return () => {
      if (state.source) state.source.close();
      if (state.stopPoll) state.stopPoll();
      if (state.stopTick) state.stopTick();
    };
  }

  // <details> whose open state survives live re-renders.
  function details(state, key, openByDefault, summary, ...body) {
    const isOpen = state.open.has(key) || (openByDefault && !state.closed.has(key));
    const el = h("details", { class: "fold", open: isOpen, dataset: { key } }, h("summary", null, summary), ...body);
    el.addEventListener("toggle", () => {
      if (el.open) { state.open.add(key); state.closed.delete(key); } else { state.open.delete(key); state.closed.add(key); }
    });
    return el;
  }

  function groupRounds(events) {
    const rounds = new Map();
    const pre = [], post = [];
    const r = (i) => {
      if (!rounds.has(i)) rounds.set(i, { round: i, decisions: [], calls: new Map(), refined: [], errors: [], t0: null });
      return rounds.get(i);
    };
    for (const ev of events) {
      const hasRound = ev.round !== null && ev.round !== undefined;
      if (ev.kind === "run_started") pre.push(ev);
      else if (ev.kind === "run_finished") post.push(ev);
      else if (!hasRound) (ev.kind === "error" ? post : pre).push(ev);
      else {
        const g = r(ev.round);
        if (g.t0 === null || ev.ts < g.t0) g.t0 = ev.ts;
        if (ev.kind === "policy_decided") g.decisions.push(ev);
        else if (ev.kind === "call_started" || ev.kind === "call_finished") {
          const c = g.calls.get(ev.call_id) || { call_id: ev.call_id, started: null, finished: null };
          if (ev.kind === "call_started") c.started = ev; else c.finished = ev;
          g.calls.set(ev.call_id, c);
        } else if (ev.kind === "refined") g.refined.push(ev);
        else if (ev.kind === "error") g.errors.push(ev);
      }
    }
    return { pre, post, rounds: [...rounds.values()].sort((a, b) => a.round - b.round) };
  }

  function stat(label, value, sub, testid) {
    return h("div", { class: "stat", dataset: { testid: testid || "" } }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), sub ? h("div", { class: "stat-sub" }, sub) : null);
  }

  function runView(state) {
    const run = state.run;
    const { pre, post, rounds } = groupRounds(state.events);
    const frag = h("div", { class: "run-view", dataset: { runId: run.run_id, status: run.status || "" } });
    const live = run.status === "running";

    frag.appendChild(h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), h("span", null, "/"), h("span", { class: "mono" }, shortId(run.run_id))));
    frag.appendChild(h("div", { class: "card run-head" },
      h("div", { class: "run-head-top" },
        statusBadge(run.status),
        live ? h("span", { class: "live-pill", dataset: { testid: "live" } }, "live — receiving events") : null,
        h("span", { class: "muted" }, "pool ", h("strong", null, run.pool || "—")),
        h("span", { class: "muted" }, "policy ", h("strong", null, run.policy || "—")),
        h("span", { class: "muted", title: ago(run.started_at) }, fmtTime(run.started_at)),
        h("span", { class: "mono muted run-id" }, run.run_id)),
      h("h1", { class: "run-query" }, run.query || "(no query)"),
      run.stop_reason ? h("div", { class: "stop-reason " + (run.status === "error" ? "is-error" : run.status === "budget" ? "is-budget" : run.status === "interrupted" ? "is-interrupted" : "") }, "stop reason: ", h("span", { class: "mono" }, run.stop_reason)) : null,
      run.status === "interrupted" && run.resume ? h("div", { class: "resume-box", dataset: { testid: "resume" } },
        "The process running this run is gone (killed or crashed); its trace stops here. Continue it (a durable run, as CLI runs are) with",
        h("code", { dataset: { testid: "resume-command" } }, run.resume)) : null));

    frag.appendChild(h("div", { class: "stats" },
      stat("Cost", fmtUSD(run.cost_usd), null, "run-cost"),
      stat("Tokens", fmtInt((run.input_tokens || 0) + (run.output_tokens || 0)), fmtInt(run.input_tokens) + " in · " + fmtInt(run.output_tokens) + " out", "run-tokens"),
      stat("Calls", fmtInt(run.calls), null, "run-calls"),
      stat("Rounds", fmtInt(run.rounds), null, "run-rounds"),
      stat("Duration", live ? fmtDur(Date.now() / 1000 - run.started_at) : fmtDur(run.duration_s), live ? "so far" : null, "run-duration")));

    // Final budget state: the last budget_left reported.
    let lastLeft = null;
    for (const ev of state.events) if (ev.budget_left && Object.keys(ev.budget_left).length) lastLeft = ev.budget_left;
    const side = h("div", { class: "side" },
      h("section", { class: "card" }, h("h2", null, "Answer"),
        run.answer ? h("pre", { class: "text answer", dataset: { testid: "answer" } }, run.answer) : h("p", { class: "muted" }, live ? "No answer yet." : "No answer.")),
      lastLeft ? h("section", { class: "card" }, h("h2", null, "Budget left"), budgetMeter(lastLeft, run.budget, false)) : null,
      budgetLimits(run.budget));

    const timeline = h("section", { class: "timeline", "aria-label": "timeline" });
    for (const ev of pre) if (ev.kind === "error") timeline.appendChild(errorStep(ev));
    if (!rounds.length && !post.length) timeline.appendChild(h("p", { class: "muted" }, live ? "Waiting for the first decision…" : "No rounds recorded."));
    for (const g of rounds) timeline.appendChild(roundView(state, g, run));
    for (const ev of post) timeline.appendChild(ev.kind === "error" ? errorStep(ev) : finishStep(ev));
    frag.appendChild(h("div", { class: "run-body" }, h("div", { class: "main-col" }, h("h2", { class: "section-title" }, "Timeline"), timeline), side));
    return frag;
  }

  function budgetLimits(budget) {
    const keys = Object.entries(budget || {}).filter(([, v]) => v !== null && v !== undefined);
    if (!keys.length) return null;
    return h("section", { class: "card" }, h("h2", null, "Budget limits"),
      h("dl", { class: "kv" }, keys.map(([k, v]) => [h("dt", null, k), h("dd", null, k === "usd" ? fmtUSD(v) : k === "seconds" ? fmtDur(v) : fmtInt(v))])));
  }

  // Meters of what is left of each limit.
  const BUDGET_KEYS = [["usd", "USD"], ["tokens", "tokens"], ["calls", "calls"], ["rounds", "rounds"], ["seconds", "time"]];
  function budgetMeter(left, budget, compact) {
    const box = h("div", { class: "meters" + (compact ? " compact" : ""), dataset: { testid: "budget" } });
    for (const [k, label] of BUDGET_KEYS) {
      const v = left[k];
      if (v === null || v === undefined) continue;
      const limit = budget ? budget[k] : null;
      const frac = limit ? Math.max(0, Math.min(1, v / limit)) : null;
      const val = k === "usd" ? fmtUSD(v) : k === "seconds" ? fmtDur(v) : fmtInt(v);
      const lim = limit ? " / " + (k === "usd" ? fmtUSD(limit) : k === "seconds" ? fmtDur(limit) : fmtInt(limit)) : "";
      const bar = h("div", { class: "meter-track" }, h("div", { class: "meter-fill " + (frac === null ? "" : frac < 0.15 ? "low" : frac < 0.4 ? "mid" : "high"), style: { width: frac === null ? "100%" : (frac * 100).toFixed(1) + "%" } }));
      box.appendChild(h("div", { class: "meter", dataset: { key: k, left: String(v) }, title: label + " left: " + val + lim },
        h("span", { class: "meter-label" }, label), bar, h("span", { class: "meter-value" }, val, h("span", { class: "muted" }, lim))));
    }
    return box.childNodes.length ? box : null;
  }

  function actionPill(action) { return h("span", { class: "pill action-" + action }, action || "?"); }

  function roundView(state, g, run) {
    const calls = [...g.calls.values()].filter((c) => (c.started || c.finished).role !== "refine");
    const refineCalls = [...g.calls.values()].filter((c) => (c.started || c.finished).role === "refine");
    let cost = 0;
    for (const c of g.calls.values()) if (c.finished) cost += c.finished.cost_usd || 0;
    const ends = [];
    for (const c of g.calls.values()) if (c.finished) ends.push(c.finished.ts);
    for (const r of g.refined) ends.push(r.ts);
    const dur = ends.length ? Math.max(...ends) - g.t0 : null;
    if (!g.calls.size && !g.refined.length && g.decisions.length && g.decisions.every((d) => d.action === "answer")) {
      // The policy's last word: no calls, just the decision to answer.
      return h("section", { class: "round round-final", dataset: { round: String(g.round), testid: "final-decision" } },
        g.decisions.map((d) => decisionStep(d, run)), g.errors.map(errorStep));
    }
    const sec = h("section", { class: "round", dataset: { round: String(g.round), testid: "round" } },
      h("header", { class: "round-head" },
        h("h3", null, "Round " + (g.round + 1)),
        h("span", { class: "muted" }, calls.length + (calls.length === 1 ? " call" : " calls")),
        h("span", { class: "muted" }, fmtUSD(cost)),
        dur !== null ? h("span", { class: "muted" }, fmtDur(dur)) : null));
    for (const d of g.decisions) sec.appendChild(decisionStep(d, run));
    if (calls.length) {
      sec.appendChild(step("dispatch", h("span", null, h("strong", null, "Parallel calls"), h("span", { class: "muted" }, " · latency from the round's start")), lanes(g, calls, run.status === "running" ? null : lastTs(state.events))));
      sec.appendChild(h("div", { class: "calls" }, calls.map((c) => callCard(state, c, run))));
    }
    for (const c of refineCalls) sec.appendChild(h("div", { class: "calls" }, callCard(state, c, run)));
    for (const r of g.refined) sec.appendChild(refineStep(state, r, run));
    for (const e of g.errors) sec.appendChild(errorStep(e));
    return sec;
  }

  function step(kind, title, ...body) {
    return h("div", { class: "step step-" + kind, dataset: { step: kind } }, h("div", { class: "step-dot", "aria-hidden": "true" }), h("div", { class: "step-body" }, h("div", { class: "step-title" }, title), ...body));
  }

  function scoresView(scores) {
    const entries = Object.entries(scores || {});
    if (!entries.length) return null;
    const numeric = entries.filter(([, v]) => typeof v === "number");
    if (numeric.length === entries.length) {
      const max = Math.max(...numeric.map(([, v]) => Math.abs(v)), 1e-12);
      numeric.sort((a, b) => b[1] - a[1]);
      return h("div", { class: "scores", dataset: { testid: "scores" } }, numeric.map(([k, v]) =>
        h("div", { class: "score-row", dataset: { key: k } },
          h("span", { class: "score-key", title: k }, k),
          h("span", { class: "score-track" }, h("span", { class: "score-fill", style: { width: (Math.abs(v) / max * 100).toFixed(1) + "%", background: colorFor(k) } })),
          h("span", { class: "score-val mono" }, Number.isInteger(v) ? String(v) : v.toFixed(3)))));
    }
    // Nested scores (e.g. per candidate: quality, cost): a small table.
    const cols = [];
    for (const [, v] of entries) if (v && typeof v === "object" && !Array.isArray(v)) for (const c of Object.keys(v)) if (!cols.includes(c)) cols.push(c);
    if (cols.length) {
      return h("table", { class: "mini", dataset: { testid: "scores" } },
        h("thead", null, h("tr", null, h("th", null, ""), cols.map((c) => h("th", { class: "num" }, c)))),
        h("tbody", null, entries.map(([k, v]) => h("tr", null, h("td", null, k), cols.map((c) => {
          const x = v && typeof v === "object" ? v[c] : undefined;
          return h("td", { class: "num mono" }, typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(4)) : (x === null || x === undefined ? "—" : asText(x)));
        })))));
    }
    return h("pre", { class: "text small" }, asText(scores));
  }

  function callChip(c, dropped) {
    const label = (c.agent || "?") + " · " + (c.model || "?");
    return h("span", { class: "chip" + (dropped ? " dropped" : ""), title: dropped ? "refused: " + (c.limit || c.reason || "") : label },
      h("span", { class: "chip-dot", style: { background: colorFor(c.model || "") } }), label, dropped && (c.limit || c.reason) ? h("span", { class: "muted" }, " (" + (c.limit || c.reason) + ")") : null);
  }

  function decisionStep(d, run) {
    return step("decision",
      h("span", null, h("strong", null, "Policy decided "), actionPill(d.action), d.latency_s >= 0.001 ? h("span", { class: "muted" }, " · decided in " + fmtDur(d.latency_s)) : null),
      d.reason ? h("p", { class: "reason" }, d.reason) : null,
      d.note ? h("p", { class: "note muted" }, d.note) : null,
      scoresView(d.scores),
      d.calls && d.calls.length ? h("div", { class: "chips" }, h("span", { class: "chips-label" }, "planned"), d.calls.map((c) => callChip(c, false))) : null,
      d.dropped && d.dropped.length ? h("div", { class: "chips" }, h("span", { class: "chips-label" }, "dropped"), d.dropped.map((c) => callChip(c, true))) : null,
      d.budget_left && Object.keys(d.budget_left).length ? h("div", { class: "step-budget" }, h("span", { class: "chips-label" }, "budget left"), budgetMeter(d.budget_left, run.budget, true)) : null);
  }

  // The round's calls as lanes on a shared time axis.
  function lastTs(events) { return events.length ? events[events.length - 1].ts : Date.now() / 1000; }

  // endedAt: null while the run is live (unfinished calls grow with the clock), otherwise when
  // its trace stops (an interrupted run's unfinished calls end there).
  function lanes(g, calls, endedAt) {
    const t0 = g.t0;
    const now = endedAt === null ? Date.now() / 1000 : endedAt;
    const spans = calls.map((c) => {
      const ev = c.started || c.finished;
      const start = c.started ? c.started.ts : c.finished.ts - (c.finished.latency_s || 0);
      const end = c.finished ? start + (c.finished.latency_s || Math.max(0, c.finished.ts - start)) : now;
      return { c, ev, start: Math.max(0, start - t0), end: Math.max(0, end - t0) };
    });
    const total = Math.max(0.001, ...spans.map((x) => x.end));
    const box = h("div", { class: "lanes", dataset: { testid: "lanes" } });
    for (const sp of spans) {
      const f = sp.c.finished;
      const running = !f && endedAt === null;
      const err = f && f.error;
      const left = (sp.start / total) * 100;
      const width = Math.max(0.6, ((sp.end - sp.start) / total) * 100);
      box.appendChild(h("div", { class: "lane", dataset: { callId: sp.c.call_id, latency: f ? String(f.latency_s) : "" } },
        h("div", { class: "lane-label", title: sp.ev.agent + " · " + sp.ev.model },
          h("span", { class: "chip-dot", style: { background: colorFor(sp.ev.model) } }),
          h("span", { class: "lane-agent" }, sp.ev.agent), h("span", { class: "muted" }, " · " + sp.ev.model)),
        h("div", { class: "lane-track" },
          h("div", { class: "lane-bar" + (running ? " running" : "") + (err ? " error" : ""), style: { left: left.toFixed(2) + "%", width: width.toFixed(2) + "%", background: err ? null : colorFor(sp.ev.model) }, title: f ? fmtDur(f.latency_s) : running ? "running" : "no reply" }),
          laneTime(left + width, f ? fmtDur(f.latency_s) + (err ? " · error" : "") : running ? "running…" : "no reply")),
        h("div", { class: "lane-cost mono" }, f ? fmtUSD(f.cost_usd) : "")));
    }
    // Axis ticks.
    const ticks = h("div", { class: "lane axis" }, h("div", { class: "lane-label" }), h("div", { class: "lane-track axis-track" }, [0, 0.25, 0.5, 0.75, 1].map((q) =>
      h("span", { class: "tick", style: { left: (q * 100) + "%" } }, fmtDur(q * total)))), h("div", { class: "lane-cost" }));
    box.appendChild(ticks);
    return box;
  }

  // The latency label sits right of its bar, or inside its end when the bar is long.
  function laneTime(endPct, text) {
    const inside = endPct > 80;
    return h("span", { class: "lane-time" + (inside ? " inside" : ""), style: { left: inside ? "calc(" + endPct.toFixed(2) + "% - 8px)" : "calc(" + endPct.toFixed(2) + "% + 8px)" } }, text);
  }

  function messagesView(messages) {
    return h("div", { class: "messages" }, (messages || []).map((m) =>
      h("div", { class: "message role-" + (m.role || "x") }, h("div", { class: "message-role" }, m.role || "?"), h("pre", { class: "text" }, asText(m.content)))));
  }

  function callCard(state, c, run) {
    const s0 = c.started, f = c.finished, ev = s0 || f;
    const err = f && f.error;
    const card = h("article", { class: "call card" + (err ? " has-error" : "") + (f ? "" : " is-running"), dataset: { callId: c.call_id, testid: "call", costUsd: f ? String(f.cost_usd) : "", model: ev.model, agent: ev.agent } },
      h("header", { class: "call-head" },
        h("span", { class: "chip-dot", style: { background: colorFor(ev.model) } }),
        h("strong", { class: "call-agent" }, ev.agent), h("span", { class: "muted" }, " · "), h("span", { class: "call-model" }, ev.model),
        ev.role && ev.role !== "route" ? h("span", { class: "tag" }, ev.role) : null,
        h("span", { class: "spacer" }),
        f ? (err ? h("span", { class: "badge status-error" }, "error") : h("span", { class: "badge status-ok" }, "done")) : run.status === "interrupted" ? h("span", { class: "badge status-interrupted" }, "no reply") : h("span", { class: "badge status-running" }, "running")),
      h("div", { class: "call-meta" },
        h("span", { title: ev.model_id }, h("span", { class: "muted" }, "id "), h("span", { class: "mono" }, ev.model_id || "")),
        f ? h("span", null, h("span", { class: "muted" }, "tokens "), fmtInt(f.input_tokens) + " → " + fmtInt(f.output_tokens)) : (s0 ? h("span", null, h("span", { class: "muted" }, "max tokens "), fmtInt(s0.max_tokens)) : null),
        f ? h("span", { dataset: { testid: "call-cost" } }, h("span", { class: "muted" }, "cost "), fmtUSD(f.cost_usd)) : (s0 ? h("span", null, h("span", { class: "muted" }, "reserved "), fmtUSD(s0.reserved_usd)) : null),
        f ? h("span", null, h("span", { class: "muted" }, "latency "), fmtDur(f.latency_s)) : null));
    if (err) card.appendChild(h("div", { class: "error-box" }, h("strong", null, "Call failed: "), h("span", { class: "error-text" }, err)));
    if (s0 && s0.messages) card.appendChild(details(state, c.call_id + ":prompt", false, "Prompt · " + s0.messages.length + (s0.messages.length === 1 ? " message" : " messages"), messagesView(s0.messages)));
    if (f && (f.output || !err)) card.appendChild(details(state, c.call_id + ":output", true, "Output", h("pre", { class: "text output", dataset: { testid: "output" } }, f.output || "")));
    if (f && f.tool_calls && f.tool_calls.length) card.appendChild(details(state, c.call_id + ":tools", false, "Tool calls · " + f.tool_calls.length, h("pre", { class: "text small" }, asText(f.tool_calls))));
    if (f && f.budget_left && Object.keys(f.budget_left).length) card.appendChild(h("div", { class: "step-budget" }, h("span", { class: "chips-label" }, "budget left"), budgetMeter(f.budget_left, run.budget, true)));
    return card;
  }

  function refineStep(state, r, run) {
    const votes = Object.entries(r.votes || {});
    const maxVote = Math.max(1, ...votes.map(([, v]) => v));
    return step("refine",
      h("span", null, h("strong", null, "Refined"), h("span", { class: "muted" }, " by " + r.refiner), r.cost_usd ? h("span", { class: "muted" }, " · " + fmtUSD(r.cost_usd)) : null),
      details(state, "refine:" + r.round + ":" + r.seq + ":in", false, "Input · " + (r.inputs || []).length + ((r.inputs || []).length === 1 ? " output" : " outputs"),
        h("div", { class: "refine-inputs" }, (r.inputs || []).map((i) => h("div", { class: "refine-input" },
          h("div", { class: "message-role" }, (i.agent || "") + (i.model ? " · " + i.model : "")), h("pre", { class: "text" }, asText(i.output !== undefined ? i.output : i)))))),
      h("div", { class: "refine-out" }, h("div", { class: "chips-label" }, "result"), h("pre", { class: "text output", dataset: { testid: "refined-output" } }, r.output || "")),
      r.conflicts ? h("div", { class: "conflicts" }, h("strong", null, "Conflicts: "), r.conflicts) : null,
      votes.length ? h("div", { class: "scores" }, votes.map(([k, v]) => h("div", { class: "score-row" }, h("span", { class: "score-key", title: k }, k), h("span", { class: "score-track" }, h("span", { class: "score-fill", style: { width: (v / maxVote * 100) + "%" } })), h("span", { class: "score-val mono" }, v + (v === 1 ? " vote" : " votes"))))) : null,
      r.budget_left && Object.keys(r.budget_left).length ? h("div", { class: "step-budget" }, h("span", { class: "chips-label" }, "budget left"), budgetMeter(r.budget_left, run.budget, true)) : null);
  }

  function errorStep(e) {
    return h("div", { class: "step step-error", dataset: { step: "error", testid: "error" } }, h("div", { class: "step-dot" }),
      h("div", { class: "step-body error-box", role: "alert" },
        h("div", { class: "step-title" }, h("strong", null, (e.fatal ? "Fatal error" : "Error") + " in " + e.where), h("span", { class: "muted" }, " · " + e.error_type)),
        h("pre", { class: "text error-text" }, e.message)));
  }

  function finishStep(ev) {
    return step("finish finish-" + ev.status, h("span", null, h("strong", null, "Run finished "), statusBadge(ev.status), h("span", { class: "muted" }, " · " + ev.stop_reason + " · " + fmtDur(ev.duration_s))));
  }

  // ------------------------------------------------------------------ compare
  function comparePage(a, b) {
    const form = h("form", { class: "card compare-form" },
      h("label", null, "Run A", h("input", { name: "a", value: a || [...selected][0] || "", placeholder: "run id or prefix", class: "mono" })),
      h("label", null, "Run B", h("input", { name: "b", value: b || [...selected][1] || "", placeholder: "run id or prefix", class: "mono" })),
      h("button", { class: "btn", type: "submit" }, "Compare"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const fa = form.elements.a.value.trim(), fb = form.elements.b.value.trim();
      if (fa && fb) go("#/compare/" + encodeURIComponent(fa) + "/" + encodeURIComponent(fb));
    });
    appendAll(app, [h("div", { class: "page-head" }, h("div", null, h("h1", null, "Compare runs"), h("p", { class: "muted" }, "Two runs side by side: answers, cost, calls and the models of each round. Tick two runs in the list, or give their ids."))), form]);
    if (!a || !b) return null;
    const host = h("div", null, loading());
    app.appendChild(host);
    api("/api/compare" + qs({ a, b })).then((d) => { clear(host).appendChild(compareView(d)); })
      .catch((e) => { clear(host).appendChild(errorBox("Could not compare: " + e.message)); });
    return null;
  }

  function compareView(d) {
    const A = d.a, B = d.b;
    const col = (side, name) => h("div", { class: "card cmp-side", dataset: { side: name, runId: side.run.run_id } },
      h("div", { class: "cmp-label" }, "Run " + name.toUpperCase()),
      h("a", { class: "cmp-query", href: "#/run/" + encodeURIComponent(side.run.run_id) }, side.run.query || "(no query)"),
      h("div", { class: "run-head-top" }, statusBadge(side.run.status), h("span", { class: "tag" }, side.run.policy || "—"), h("span", { class: "muted" }, side.run.pool || ""), h("span", { class: "mono muted" }, shortId(side.run.run_id))),
      h("h3", null, "Answer"), h("pre", { class: "text answer", dataset: { testid: "cmp-answer" } }, side.run.answer || "—"));
    const metric = (label, key, fmt, lowerIsBetter) => {
      const va = A.run[key], vb = B.run[key];
      const best = lowerIsBetter && va !== vb && va !== null && vb !== null ? (va < vb ? "a" : "b") : null;
      const max = Math.max(Math.abs(va || 0), Math.abs(vb || 0), 1e-12);
      const cell = (v, name) => h("td", { class: "num" + (best === name ? " best" : ""), dataset: { side: name, metric: key } },
        h("span", { class: "cmp-bar-track" }, h("span", { class: "cmp-bar side-" + name, style: { width: ((Math.abs(v || 0) / max) * 100).toFixed(1) + "%" } })), fmt(v));
      return h("tr", null, h("th", null, label), cell(va, "a"), cell(vb, "b"));
    };
    const tokens = (s) => (s.run.input_tokens || 0) + (s.run.output_tokens || 0);
    A.run.tokens = tokens(A); B.run.tokens = tokens(B);
    const metrics = h("table", { class: "cmp-metrics", dataset: { testid: "cmp-metrics" } },
      h("thead", null, h("tr", null, h("th", null, ""), h("th", { class: "num" }, "Run A"), h("th", { class: "num" }, "Run B"))),
      h("tbody", null,
        metric("Cost", "cost_usd", fmtUSD, true), metric("Tokens", "tokens", fmtInt, true), metric("Calls", "calls", fmtInt, true),
        metric("Rounds", "rounds", fmtInt, true), metric("Duration", "duration_s", fmtDur, true),
        h("tr", null, h("th", null, "Stop reason"), h("td", { class: "num mono" }, A.run.stop_reason || "—"), h("td", { class: "num mono" }, B.run.stop_reason || "—"))));
    const n = Math.max(A.rounds.length, B.rounds.length);
    const roundCell = (r) => r ? h("td", null,
      h("div", { class: "chips" }, r.action ? actionPill(r.action) : null, r.models.map((m, i) => h("span", { class: "chip" }, h("span", { class: "chip-dot", style: { background: colorFor(m) } }), r.agents[i] + " · " + m))),
      r.calls ? h("div", { class: "muted small" }, r.calls + (r.calls === 1 ? " call · " : " calls · ") + fmtUSD(r.cost_usd) + (r.errors ? " · " + r.errors + " failed" : "")) : null) : h("td", { class: "muted" }, "—");
    const rows = [];
    for (let i = 0; i < n; i++) {
      const ra = A.rounds[i], rb = B.rounds[i];
      const same = ra && rb && JSON.stringify(ra.models) === JSON.stringify(rb.models);
      rows.push(h("tr", { class: same ? "" : "differs", dataset: { round: String(i) } },
        h("th", null, "Round " + (i + 1), same ? null : h("div", { class: "differs-note" }, "differs")), roundCell(ra), roundCell(rb)));
    }
    const roundsTable = h("table", { class: "cmp-rounds", dataset: { testid: "cmp-rounds" } },
      h("thead", null, h("tr", null, h("th", null, ""), h("th", null, "Run A: models"), h("th", null, "Run B: models"))), h("tbody", null, rows));
    return h("div", { class: "compare" },
      h("div", { class: "cmp-grid" }, col(A, "a"), col(B, "b")),
      h("section", { class: "card" }, h("h2", null, "Metrics"), metrics),
      h("section", { class: "card" }, h("h2", null, "Models per round"), n ? roundsTable : h("p", { class: "muted" }, "No rounds.")));
  }

  // ------------------------------------------------------------------ aggregates
  function aggregatesPage(params) {
    const filters = {};
    for (const k of FILTER_KEYS) filters[k] = params.get(k) || "";
    const change = (changes) => go(withParams("#/aggregates", params, changes));
    const barHost = h("div");
    const body = h("div", null, loading());
    appendAll(app, [h("div", { class: "page-head" }, h("div", null, h("h1", null, "Aggregates"), h("p", { class: "muted" }, "Cost and calls per model and per agent over the selected runs (every call, the refiner's included)."))), barHost, body]);
    api("/api/facets").then((f) => clear(barHost).appendChild(filterBar(params, f, change, { extra: h("a", { class: "btn btn-ghost", href: withParams("#/runs", filtersOnly(params), {}) }, "← These runs") })))
      .catch(() => clear(barHost).appendChild(filterBar(params, null, change)));
    api("/api/aggregates" + qs(filters)).then((d) => { clear(body).appendChild(aggregatesView(d)); })
      .catch((e) => { clear(body).appendChild(errorBox("Could not load aggregates: " + e.message)); });
    return null;
  }

  function barChart(rows, key, fmt, title, testid) {
    const W = 560, rowH = 30, labelW = 170, valueW = 90, top = 8;
    const H = top * 2 + Math.max(1, rows.length) * rowH;
    const max = Math.max(1e-12, ...rows.map((r) => r[key]));
    const svg = s("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": title, dataset: { testid } });
    if (!rows.length) svg.appendChild(s("text", { x: 8, y: top + 18, class: "chart-empty" }, "no calls"));
    rows.forEach((r, i) => {
      const y = top + i * rowH;
      const w = Math.max(1.5, (r[key] / max) * (W - labelW - valueW - 12));
      const label = r.key.length > 24 ? r.key.slice(0, 23) + "…" : r.key;
      svg.appendChild(s("g", { class: "bar", dataset: { key: r.key, value: String(r[key]) } },
        s("title", null, r.key + ": " + fmt(r[key])),
        s("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "chart-label" }, label),
        s("rect", { x: labelW, y: y + 5, width: w.toFixed(1), height: rowH - 10, rx: 3, fill: colorFor(r.key) }),
        s("text", { x: labelW + w + 6, y: y + rowH / 2 + 4, class: "chart-value" }, fmt(r[key]))));
    });
    return h("figure", { class: "card chart-card" }, h("figcaption", null, title), svg);
  }

  function aggTable(rows, what) {
    return h("table", { class: "mini agg-table" },
      h("thead", null, h("tr", null, h("th", null, what), h("th", { class: "num" }, "Runs"), h("th", { class: "num" }, "Calls"), h("th", { class: "num" }, "Errors"), h("th", { class: "num" }, "Cost"), h("th", { class: "num" }, "Tokens in"), h("th", { class: "num" }, "Tokens out"), h("th", { class: "num" }, "Mean latency"))),
      h("tbody", null, rows.map((r) => h("tr", { dataset: { key: r.key } },
        h("td", null, h("span", { class: "chip-dot", style: { background: colorFor(r.key) } }), r.key),
        h("td", { class: "num" }, fmtInt(r.runs)), h("td", { class: "num" }, fmtInt(r.calls)), h("td", { class: "num" }, fmtInt(r.errors)),
        h("td", { class: "num" }, fmtUSD(r.cost_usd)), h("td", { class: "num" }, fmtInt(r.input_tokens)), h("td", { class: "num" }, fmtInt(r.output_tokens)),
        h("td", { class: "num" }, fmtDur(r.calls ? r.latency_s / r.calls : null))))));
  }

  function aggregatesView(d) {
    return h("div", { class: "aggregates" },
      h("div", { class: "stats" },
        stat("Runs", fmtInt(d.runs), null, "agg-runs"), stat("Cost", fmtUSD(d.cost_usd), null, "agg-cost"),
        stat("Calls", fmtInt(d.calls), null, "agg-calls"), stat("Mean cost per run", fmtUSD(d.runs ? d.cost_usd / d.runs : null))),
      h("h2", { class: "section-title" }, "Per model"),
      h("div", { class: "chart-grid" }, barChart(d.by_model, "cost_usd", fmtUSD, "Cost by model", "chart-cost-model"), barChart(d.by_model, "calls", fmtInt, "Calls by model", "chart-calls-model")),
      h("div", { class: "card" }, aggTable(d.by_model, "Model")),
      h("h2", { class: "section-title" }, "Per agent"),
      h("div", { class: "chart-grid" }, barChart(d.by_agent, "cost_usd", fmtUSD, "Cost by agent", "chart-cost-agent"), barChart(d.by_agent, "calls", fmtInt, "Calls by agent", "chart-calls-agent")),
      h("div", { class: "card" }, aggTable(d.by_agent, "Agent")));
  }

  // ------------------------------------------------------------------ start
  api("/api/health").then((d) => {
    if (!d.db) return;
    const el = document.getElementById("db-name");
    el.textContent = d.db.split(/[\\/]/).pop() + " · " + fmtInt(d.runs) + (d.runs === 1 ? " run" : " runs");
    el.title = "trace store: " + d.db;
  }).catch(() => {});
  route();
})();
