// kernlet watcher dashboard: the small usage charts (plain SVG, no library).
// The last minutes come from GET /usage/history when the page opens; after that every
// "status" event (about every 2 s) adds a point. Node: host CPU busy share and memory used;
// selected kernel: cores busy and memory used.
"use strict";

window.kernletCharts = (() => {
  const WINDOW = 600; // seconds shown, as the server keeps (UsageHistory)
  const W = 300, H = 64;
  const node = [];              // [t, cpu share 0..1, mem used bytes]
  const perKernel = new Map();  // id -> [t, cores, mem bytes]
  let selected = null;
  let limits = { hostMem: 0, cores: 1 };

  function trim(points, horizon) {
    while (points.length && points[0][0] < horizon) points.shift();
  }

  function draw(id, points, col, max, label) {
    const fig = document.getElementById(id);
    if (!fig) return;
    const line = fig.querySelector("polyline");
    const area = fig.querySelector("polygon");
    const end = Date.now() / 1000;
    // the span grows with the data, from one minute to the whole window
    const span = Math.max(60, Math.min(WINDOW, points.length ? end - points[0][0] : 0));
    const top = Math.max(max || 0, ...points.map((p) => Number(p[col]) || 0)) || 1;
    const xy = points.map((p) => {
      const x = W - ((end - p[0]) / span) * W;
      const y = H - 2 - ((Number(p[col]) || 0) / top) * (H - 4);
      return `${Math.max(0, x).toFixed(1)},${y.toFixed(1)}`;
    });
    line.setAttribute("points", xy.join(" "));
    area.setAttribute("points", xy.length
      ? `${xy[0].split(",")[0]},${H} ${xy.join(" ")} ${xy[xy.length - 1].split(",")[0]},${H}` : "");
    fig.dataset.points = String(points.length);
    fig.title = `the last ${Math.round(span / 60)} min · peak ${label(top)}`;
    const last = points.length ? points[points.length - 1][col] : null;
    fig.querySelector(".value").textContent = last === null ? "–" : label(last);
  }

  function render(fmt) {
    draw("c-node-cpu", node, 1, 1, (v) => `${(v * 100).toFixed(0)} %`);
    draw("c-node-mem", node, 2, limits.hostMem, fmt.bytes);
    const pts = (selected && perKernel.get(selected)) || [];
    draw("c-kernel-cpu", pts, 1, limits.cores, (v) => `${fmt.num(v, 2)} cores`);
    draw("c-kernel-mem", pts, 2, 0, fmt.bytes);
    const name = document.getElementById("c-kernel-name");
    if (name) name.textContent = selected || "no kernel selected";
  }

  async function load() {
    const r = await fetch("/usage/history", { cache: "no-store" });
    if (!r.ok) return;
    const h = await r.json();
    node.splice(0, node.length, ...h.node);
    for (const [kid, pts] of Object.entries(h.kernels)) perKernel.set(kid, pts);
  }

  function add(status, t) {
    const horizon = t - WINDOW;
    if (status.host) {
      const h = status.host;
      limits.hostMem = h.mem_total;
      node.push([t, h.cpu_ratio, h.mem_total - h.mem_available]);
    }
    for (const [kid, u] of Object.entries(status.usage || {})) {
      if (!perKernel.has(kid)) perKernel.set(kid, []);
      perKernel.get(kid).push([t, u.cpu_ratio, u.memory_bytes]);
    }
    trim(node, horizon);
    for (const [kid, pts] of perKernel) {
      trim(pts, horizon);
      if (!pts.length && kid !== selected) perKernel.delete(kid);
    }
  }

  return {
    load, add, render,
    select(id, cores) { selected = id; limits.cores = Number(cores) || 1; },
  };
})();
