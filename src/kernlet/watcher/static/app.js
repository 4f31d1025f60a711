// kernlet watcher dashboard: plain JS, no build step.
// Live through server-sent events (GET /events): "snapshot" once per connection, then "kernel"
// (an event and the kernel's new summary), "agent" and "status" (gauges, per-kernel usage).
// Everything user-controlled is written with textContent, never as HTML.
"use strict";

(() => {
  const STATES = ["preparing", "pulling", "creating", "running", "restarting", "terminating", "terminated"];
  const TOKEN_KEY = "kernlet-watcher-token";
  const kernels = new Map();
  let status = null;
  let selected = null;
  let userSelected = false;
  let timeline = { id: null, events: [], loading: false };

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- formatting ---------------------------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
    n = Number(n);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
  }

  function duration(s) {
    s = Math.max(0, Number(s) || 0);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${m % 60}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    const pad = (x, n = 2) => String(x).padStart(n, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function num(x, digits = 1) {
    const v = Number(x) || 0;
    return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  }

  const now = () => Date.now() / 1000;
  const isEnded = (k) => k.state === "terminated";

  function pill(state) {
    return el("span", `pill state-${STATES.includes(state) ? state : "terminated"}`, state);
  }

  function meter(node, ratio) {
    const r = Math.max(0, Math.min(1, Number(ratio) || 0));
    const m = node.querySelector(".meter");
    if (!m) return;
    m.querySelector("span").style.width = `${(r * 100).toFixed(1)}%`;
    m.classList.toggle("warn", r >= 0.75 && r < 0.95);
    m.classList.toggle("full", r >= 0.95);
  }

  function gauge(id, value, ratio, note) {
    const node = $(id);
    node.querySelector(".value").textContent = value;
    if (ratio !== null) meter(node, ratio);
    const n = node.querySelector(".note");
    if (n) n.textContent = note || "";
  }

  // -- status and gauges --------------------------------------------------------------------

  function setStatus(s) {
    status = s;
    const a = s.agent;
    $("agent-id").textContent = a.id;
    $("agent-meta").textContent = `v${a.version} · ${a.hostname} · ${a.region}/${a.scaling_group}`;
    renderAllocation();
    if (s.host) {
      gauge("g-hostcpu", `${(s.host.cpu_ratio * 100).toFixed(0)} %`, s.host.cpu_ratio,
        cores(s.host.cpu_count));
      const usedMem = s.host.mem_total - s.host.mem_available;
      gauge("g-hostmem", bytes(usedMem), s.host.mem_total ? usedMem / s.host.mem_total : 0,
        `of ${bytes(s.host.mem_total)}`);
    }
    const log = s.event_log;
    gauge("g-log", `${log.events} events`, null,
      `${bytes(log.bytes)} · ${log.undelivered} undelivered`);
    $("nats").textContent = s.nats.connected
      ? `NATS connected · ${s.nats.published} events published`
      : `NATS not connected${s.nats.last_error ? ` (${s.nats.last_error})` : ""}`;
    for (const [kid, usage] of Object.entries(s.usage || {})) {
      const k = kernels.get(kid);
      if (k) k.usage = usage;
    }
    charts.add(s, now());
    renderCharts();
    renderKernels();
  }

  const cores = (n) => `${num(n)} ${Number(n) === 1 ? "core" : "cores"}`;

  function renderAllocation() {
    // slots of the live kernels on the page: the gauges never lag the table
    if (!status) return;
    const cap = status.resources.capacity;
    const used = { cpu: 0, mem: 0 };
    for (const k of kernels.values()) {
      if (isEnded(k)) continue;
      for (const slot of Object.keys(used)) used[slot] += Number((k.slots || {})[slot]) || 0;
    }
    const free = (slot) => Math.max(0, (cap[slot] || 0) - used[slot]);
    gauge("g-cpu", `${num(used.cpu)} / ${cores(cap.cpu)}`, cap.cpu ? used.cpu / cap.cpu : 0,
      `${cores(free("cpu"))} free`);
    gauge("g-mem", bytes(used.mem), cap.mem ? used.mem / cap.mem : 0,
      `of ${bytes(cap.mem)} · ${bytes(free("mem"))} free`);
  }

  function tickUptime() {
    if (!status) return;
    $("uptime").textContent = `up ${duration(now() - status.agent.started_at)}`;
  }

  async function pollHealth() {
    const node = $("health");
    try {
      const r = await fetch("/healthz", { cache: "no-store" });
      const h = await r.json();
      const failing = Object.entries(h.checks).filter(([, c]) => !c.ok).map(([n]) => n);
      node.className = `pill ${h.ok ? "pill-ok" : "pill-bad"}`;
      node.textContent = h.ok ? "healthy" : `unhealthy: ${failing.join(", ")}`;
      node.title = Object.entries(h.checks).map(([n, c]) => `${n}: ${c.detail}`).join("\n");
    } catch (err) {
      node.className = "pill pill-unknown";
      node.textContent = "health unknown";
    }
  }

  // -- kernels table ------------------------------------------------------------------------

  function sortedKernels() {
    const all = [...kernels.values()];
    const live = all.filter((k) => !isEnded(k)).sort((a, b) => a.created_at - b.created_at);
    const ended = all.filter(isEnded).sort((a, b) => b.updated_at - a.updated_at);
    return $("show-ended").checked ? live.concat(ended) : live;
  }

  function renderCounts() {
    // from the kernels on the page (every kernel of the log), so it never lags the table
    const byState = new Map();
    for (const k of kernels.values()) byState.set(k.state, (byState.get(k.state) || 0) + 1);
    const live = kernels.size - (byState.get("terminated") || 0);
    $("g-kernels").querySelector(".value").textContent = `${live} live`;
    const counts = $("state-counts");
    counts.replaceChildren();
    for (const st of STATES) {
      const n = byState.get(st) || 0;
      if (n) counts.append(el("span", `pill state-${st}`, `${n} ${st}`));
    }
  }

  function renderKernels() {
    renderCounts();
    renderAllocation();
    const rows = $("kernel-rows");
    const list = sortedKernels().slice(0, 300);
    rows.replaceChildren();
    for (const k of list) {
      const tr = el("tr");
      tr.dataset.kernel = k.id;
      tr.dataset.state = k.state;
      if (k.id === selected) tr.classList.add("selected");
      if (isEnded(k)) tr.classList.add("ended");

      const id = el("td", "mono", k.id);
      if (k.session_id && k.session_id !== k.id) id.append(el("span", "sub", `session ${k.session_id}`));
      const st = el("td");
      st.append(pill(k.state));
      const image = el("td", "image", k.image || "–");
      image.title = k.image || "";

      const cpu = el("td", "num");
      const mem = el("td", "num");
      const u = !isEnded(k) ? k.usage : null;
      if (u) {
        cpu.textContent = `${(u.cpu_ratio * 100).toFixed(0)}%`;
        const bar = el("span", "bar-mini");
        const fill = el("span");
        const alloc = Number(k.slots && k.slots.cpu) || 1;
        fill.style.width = `${Math.min(100, (u.cpu_ratio / alloc) * 100).toFixed(0)}%`;
        bar.append(fill);
        cpu.append(bar);
        mem.textContent = bytes(u.memory_bytes);
        if (k.slots && k.slots.mem) mem.append(el("span", "sub", `of ${bytes(k.slots.mem)}`));
      } else {
        cpu.textContent = "–";
        mem.textContent = "–";
      }
      const runs = el("td", "num", k.executions);
      const ago = now() - k.updated_at;
      const since = el("td", null, isEnded(k)
        ? (ago < 1 ? "just ended" : `ended ${duration(ago)} ago`)
        : duration(now() - k.created_at));
      let why = k.reason || "";
      if (isEnded(k) && k.exit_code !== null && k.exit_code !== undefined) why += ` · exit ${k.exit_code}`;
      const reason = el("td", "reason", why || "–");
      reason.title = why;
      tr.append(id, st, image, cpu, mem, runs, since, reason);
      tr.addEventListener("click", () => { userSelected = true; select(k.id); });
      rows.append(tr);
    }
    $("no-kernels").hidden = kernels.size > 0;
  }

  function autoSelect() {
    if (userSelected && selected && kernels.has(selected)) return;
    const all = [...kernels.values()];
    if (!all.length) return;
    const live = all.filter((k) => !isEnded(k));
    const pool = live.length ? live : all;
    pool.sort((a, b) => b.created_at - a.created_at);
    if (pool[0].id !== selected) select(pool[0].id);
  }

  // -- timeline -----------------------------------------------------------------------------

  const charts = window.kernletCharts;

  function renderCharts() {
    const k = selected ? kernels.get(selected) : null;
    charts.select(selected, k && k.slots ? k.slots.cpu : 1);
    charts.render({ bytes, num });
  }

  async function select(id) {
    selected = id;
    renderCharts();
    renderKernels();
    timeline = { id, events: [], loading: true };
    renderTimeline();
    try {
      const r = await fetch(`/kernels/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const detail = await r.json();
      if (timeline.id !== id) return;
      const extra = timeline.events.filter((e) => e.seq > detail.events.length);
      timeline = { id, events: detail.events.concat(extra), loading: false };
    } catch (err) {
      if (timeline.id === id) timeline.loading = false;
    }
    renderTimeline();
  }

  function appendEvent(ev) {
    if (timeline.id !== ev.kernel_id) return;
    const last = timeline.events.length ? timeline.events[timeline.events.length - 1].seq : 0;
    if (ev.seq === last + 1) {
      timeline.events.push(ev);
      renderTimeline();
    } else if (ev.seq > last + 1 && !timeline.loading) {
      select(ev.kernel_id);
    }
  }

  function detailOf(ev) {
    const p = ev.payload || {};
    const parts = [];
    if (p.image) parts.push(p.image);
    if (p.container_id) parts.push(`container ${String(p.container_id).slice(0, 12)}`);
    if (p.slots && Object.keys(p.slots).length) {
      parts.push(Object.entries(p.slots).map(([s, v]) => (s === "mem" ? `${s} ${bytes(v)}` : `${s} ${v}`)).join(", "));
    }
    if (p.info && p.info.create_seconds !== undefined) parts.push(`created in ${duration(p.info.create_seconds)}`);
    if (p.run_id) parts.push(`run ${p.run_id}`);
    if (p.mode) parts.push(p.mode);
    if (p.status) parts.push(p.status);
    if (p.reason) parts.push(p.reason);
    if (p.exit_code !== undefined && p.exit_code !== null) parts.push(`exit ${p.exit_code}`);
    if (p.error) parts.push(p.error);
    return parts.join(" · ");
  }

  function renderStrip(events, kernel) {
    const strip = $("tl-strip");
    const legend = $("tl-legend");
    strip.replaceChildren();
    legend.replaceChildren();
    if (!events.length) return;
    const spans = [];
    for (let i = 0; i < events.length; i += 1) {
      const ev = events[i];
      const end = i + 1 < events.length ? events[i + 1].time
        : (kernel && isEnded(kernel) ? ev.time : now());
      const prev = spans[spans.length - 1];
      if (prev && prev.state === ev.state) prev.end = end;
      else spans.push({ state: ev.state, start: ev.time, end });
    }
    const total = Math.max(0.001, spans.reduce((s, x) => s + (x.end - x.start), 0));
    const seen = new Map();
    for (const s of spans) {
      const seg = el("span");
      seg.style.flexGrow = String(Math.max(0.004, (s.end - s.start) / total));
      seg.style.background = `var(--${s.state})`;
      seg.title = `${s.state}: ${duration(s.end - s.start)}`;
      strip.append(seg);
      seen.set(s.state, (seen.get(s.state) || 0) + (s.end - s.start));
    }
    for (const [st, secs] of seen) {
      const item = el("span");
      const sw = el("i");
      sw.style.background = `var(--${st})`;
      item.append(sw, `${st} ${st === "terminated" ? "" : duration(secs)}`.trim());
      legend.append(item);
    }
  }

  function renderTimeline() {
    const k = timeline.id ? kernels.get(timeline.id) : null;
    $("timeline").dataset.kernel = timeline.id || "";
    $("tl-kernel").textContent = timeline.id || "";
    const st = $("tl-state");
    st.replaceChildren();
    if (k) st.append(pill(k.state));
    $("destroy").hidden = !k || isEnded(k);
    const list = $("tl-events");
    list.replaceChildren();
    let prev = null;
    for (const ev of timeline.events) {
      const li = el("li");
      li.dataset.type = ev.type;
      li.style.setProperty("--dot", `var(--${STATES.includes(ev.state) ? ev.state : "terminated"})`);
      li.append(el("span", "when", clock(ev.time)));
      if (prev) li.append(el("span", "delta", `+${duration(ev.time - prev.time)}`));
      li.append(el("span", "type", ev.type));
      const d = detailOf(ev);
      if (d) li.append(el("span", "detail", d));
      list.append(li);
      prev = ev;
    }
    list.scrollTop = list.scrollHeight;
    $("tl-empty").hidden = Boolean(timeline.id);
    renderStrip(timeline.events, k);
  }

  // -- operations ---------------------------------------------------------------------------

  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  async function destroySelected() {
    const id = timeline.id;
    if (!id) return;
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = window.prompt("Operator token (X-Kernlet-Token) to destroy kernels:");
      if (!token) return;
    }
    const r = await fetch(`/kernels/${encodeURIComponent(id)}/destroy`, {
      method: "POST",
      headers: { "X-Kernlet-Token": token, "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "operator-requested" }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      sessionStorage.setItem(TOKEN_KEY, token);
      toast(`destroyed ${id}`);
    } else {
      if (r.status === 401 || r.status === 403) sessionStorage.removeItem(TOKEN_KEY);
      toast(`destroy failed: ${(body.error && body.error.message) || r.status}`);
    }
  }

  // -- live updates -------------------------------------------------------------------------

  function connect() {
    const es = new EventSource("/events");
    const conn = $("conn");
    es.addEventListener("open", () => { conn.className = "conn conn-on"; conn.textContent = "live"; });
    es.addEventListener("error", () => { conn.className = "conn conn-off"; conn.textContent = "reconnecting"; });
    es.addEventListener("snapshot", (e) => {
      const d = JSON.parse(e.data);
      kernels.clear();
      for (const k of d.kernels) kernels.set(k.id, k);
      setStatus(d.status);
      tickUptime();
      if (selected && kernels.has(selected)) select(selected);
      else autoSelect();
    });
    es.addEventListener("kernel", (e) => {
      const d = JSON.parse(e.data);
      const isNew = !kernels.has(d.kernel.id);
      kernels.set(d.kernel.id, d.kernel);
      appendEvent(d.event);
      if (isNew) autoSelect();
      renderKernels();
      if (timeline.id === d.kernel.id) renderTimeline();
    });
    es.addEventListener("status", (e) => setStatus(JSON.parse(e.data)));
  }

  $("show-ended").addEventListener("change", renderKernels);
  $("destroy").addEventListener("click", () => { destroySelected().catch((err) => toast(String(err))); });
  charts.load().then(renderCharts).catch(() => {}).finally(connect);
  pollHealth();
  setInterval(pollHealth, 5000);
  setInterval(() => {
    tickUptime();
    renderKernels();
    if (timeline.id) renderStrip(timeline.events, kernels.get(timeline.id));
  }, 1000);
})();
