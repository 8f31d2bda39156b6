// The phoenix-channels dashboard: joins "dashboard:live" with the official
// client and draws what each update says. No build step, no dependencies.
import { Socket } from "./phoenix.mjs";

const base = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const params = Object.fromEntries(new URLSearchParams(location.search));
const history = []; // [{t, in, out}], the last 120 updates
const $ = (selector) => document.querySelector(selector);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(table, rows, empty) {
  const body = $(table + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = 7;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    body.append(tr);
  }
}

function button(label, onClick) {
  const td = document.createElement("td");
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", onClick);
  td.append(b);
  return td;
}

function fmt(n) {
  return n >= 100 ? Math.round(n).toLocaleString("en") : (Math.round(n * 10) / 10).toString();
}

function merged(nodes, key) {
  const all = new Map();
  for (const node of nodes) {
    for (const [topic, n] of node[key]) all.set(topic, (all.get(topic) || 0) + n);
  }
  return [...all.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
}

function draw() {
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...history.map((p) => Math.max(p.in, p.out)));
  ctx.strokeStyle = "#e3e6ec";
  ctx.fillStyle = "#6b7385";
  ctx.font = "12px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + ((h - pad) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad * 2, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt((max * (4 - i)) / 4), 0, y + 4);
  }
  const style = getComputedStyle(document.documentElement);
  for (const [key, color] of [["out", "--accent"], ["in", "--accent2"]]) {
    ctx.strokeStyle = style.getPropertyValue(color).trim();
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, i) => {
      const x = pad * 2 + ((w - pad * 2) * i) / 119;
      const y = pad / 2 + (h - pad) * (1 - p[key] / max);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

function act(channel, event, payload) {
  channel.push(event, payload).receive("ok", () => {
    $("#status").textContent = `${event}: done`;
  }).receive("error", (r) => {
    $("#status").textContent = `${event} failed: ${r.reason}`;
  });
}

function render(channel, nodes) {
  document.body.dataset.nodes = nodes.length;
  document.body.dataset.connections = nodes.reduce((s, n) => s + n.connections, 0);
  fill("#nodes", nodes.map((n) => [
    cell(n.node), cell(n.connections, "n"), cell(fmt(n.in_per_s), "n"),
    cell(fmt(n.out_per_s), "n"),
    cell(`${n.engine.engine} ${n.engine.up ? "up" : "down"}` +
         (n.engine.reconnects ? ` (${n.engine.reconnects} reconnects, last gap ${n.engine.gap}s)` : ""),
         n.engine.up ? "up" : "down"),
    button("drain", () => {
      if (confirm(`Drain ${n.node}? Every connection on it will be closed.`)) act(channel, "drain", { node: n.node });
    }),
  ]), "no node");
  fill("#by-subscribers", merged(nodes, "topics_by_subscribers").map(([t, n]) =>
    [cell(t), cell(n, "n")]), "no topic");
  fill("#by-rate", merged(nodes, "topics_by_rate").map(([t, n]) =>
    [cell(t), cell(`${fmt(n)}/s`, "n")]), "no traffic");
  // Presence replicas are the same on every node: show the largest count per topic.
  const presence = new Map();
  for (const node of nodes) for (const [t, n] of node.presence) presence.set(t, Math.max(presence.get(t) || 0, n));
  fill("#presence", [...presence.entries()].sort((a, b) => b[1] - a[1]).map(([t, n]) =>
    [cell(t), cell(n, "n")]), "no presence");
  const limited = nodes.flatMap((n) => n.limited.map((l) => ({ ...l, node: n.node })))
    .sort((a, b) => b.at - a.at).slice(0, 20);
  fill("#limited", limited.map((l) => [
    cell(new Date(l.at * 1000).toLocaleTimeString()), cell(l.node), cell(l.socket || "-"),
    cell(l.limit), cell(l.closed ? "closed" : "refused"),
  ]), "none");
  fill("#sockets", nodes.flatMap((n) => n.sockets.map((s) => [
    cell(n.node), cell(s.id), cell(s.name || "-"), cell(s.transport), cell(s.channels, "n"),
    cell(s.age, "n"),
    button("disconnect", () => act(channel, "disconnect", { node: n.node, socket: s.id })),
  ])), "no socket");
  history.push({
    in: nodes.reduce((s, n) => s + n.in_per_s, 0),
    out: nodes.reduce((s, n) => s + n.out_per_s, 0),
  });
  if (history.length > 120) history.shift();
  draw();
}

const socket = new Socket(base + "/live", { params });
socket.onError(() => { $("#status").textContent = "disconnected (retrying)"; });
socket.connect();
const channel = socket.channel("dashboard:live", {});
channel.on("stats", ({ nodes }) => {
  render(channel, nodes);
  document.body.dataset.updates = Number(document.body.dataset.updates || 0) + 1;
});
channel.join()
  .receive("ok", ({ node }) => {
    $("#status").textContent = `connected to ${node}`;
    document.body.dataset.joined = node;
  })
  .receive("error", (r) => { $("#status").textContent = `refused: ${r.reason}`; });
