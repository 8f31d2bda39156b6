// The Python client (phoenix_channels.client) beside the official JS client:
// in the same topic they see the same broadcasts (JSON and binary) and the
// same presence list, with the Python client on WebSocket and on long
// polling; and the Python Presence helper's sync functions give what the JS
// helper's give, on the same generated inputs.
//
// The Python side is tests/client/peer.py, driven over JSON lines; the server
// is tests/client/app.py (it uses the server's Presence).
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { Presence } from "phoenix";
import {
  Clients,
  EventLog,
  PYTHON,
  REPO_ROOT,
  WAIT_MS,
  join,
  pushAsync,
  startServer,
  topic,
  withTimeout,
} from "./helpers.mjs";

const APP = "tests.client.app:endpoint";
let server;
const clients = new Clients();
const peers = [];

before(async () => {
  server = await startServer({ app: APP });
});
afterEach(async () => {
  await clients.closeAll();
  await Promise.all(peers.splice(0).map((peer) => peer.close()));
});
after(async () => {
  if (server) await server.stop();
});

/** A Python client in its own process: `call` sends a command and resolves with its answer. */
class PythonPeer {
  constructor() {
    this.proc = spawn(PYTHON, [path.join(REPO_ROOT, "tests", "client", "peer.py")], {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.pending = new Map();
    this.nextId = 0;
    this.events = new EventLog("python peer events");
    this.stderr = "";
    this.exit = new Promise((resolve) => this.proc.once("exit", resolve));
    let buffered = "";
    this.proc.stderr.on("data", (d) => (this.stderr += d));
    this.proc.stdout.on("data", (data) => {
      buffered += data;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        if (line.id !== undefined) {
          const waiter = this.pending.get(line.id);
          this.pending.delete(line.id);
          if (line.error) waiter.reject(new Error(`python peer: ${line.error}\n${this.stderr}`));
          else waiter.resolve(line.ok);
        } else {
          this.events.push(line);
        }
      }
    });
    peers.push(this);
  }

  call(cmd, args = {}, ms = WAIT_MS * 2) {
    const id = this.nextId++;
    const answer = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.proc.stdin.write(JSON.stringify({ id, cmd, ...args }) + "\n");
    return withTimeout(answer, ms, () => `python peer answers ${cmd}\n--- peer stderr ---\n${this.stderr}`);
  }

  async close() {
    if (this.proc.exitCode === null) {
      try {
        await this.call("close", {}, 5000);
      } catch {
        /* killed below */
      }
      this.proc.kill("SIGKILL");
    }
    await this.exit;
  }
}

const fromPython = (value) =>
  value && typeof value === "object" && Array.isArray(value.$bytes) ? new Uint8Array(value.$bytes).buffer : value;
const hex = (buf) => Buffer.from(buf).toString("hex");

const jsList = (presence) =>
  presence
    .list((key, p) => ({ key, refs: p.metas.map((m) => m.phx_ref) }))
    .sort((a, b) => (a.key < b.key ? -1 : 1));

for (const pyTransport of ["websocket", "longpoll"]) {
  test(`JS and Python (${pyTransport}) clients in one topic see the same broadcasts`, async () => {
    const t = topic(`pyjs-${pyTransport}`);
    const js = await clients.open(server);
    const { channel, events } = await join(js, t, {}, { listen: ["shout"] });
    const py = new PythonPeer();
    await py.call("connect", { url: server.url, transport: pyTransport });
    await py.call("join", { topic: t, listen: ["shout"] });

    const sent = [{ from: "js", n: 1 }, { from: "py", n: 2, "é": "✓" }, { from: "js", n: 3, list: [1, null, true] }];
    for (const payload of sent) {
      const reply =
        payload.from === "js"
          ? await pushAsync(channel, "shout", payload)
          : await py.call("push", { topic: t, event: "shout", payload });
      assert.equal(reply.status, "ok");
    }
    const jsSeen = (await events.waitForCount((e) => e.type === "shout", 3, "JS got three shouts")).map((e) => e.payload);
    const pySeen = (
      await py.events.waitForCount((e) => e.message && e.message.event === "shout", 3, "Python got three shouts")
    ).map((e) => e.message.payload);
    assert.deepEqual(jsSeen, sent);
    assert.deepEqual(pySeen, jsSeen);
  });

  test(`JS and Python (${pyTransport}) clients see the same presence list`, async () => {
    const t = topic(`pyjs-presence-${pyTransport}`);
    const js = await clients.open(server);
    const channel = js.socket.channel(t, { presence: "ana" });
    const presence = new Presence(channel);
    const jsSyncs = new EventLog("JS presence syncs");
    presence.onSync(() => jsSyncs.push(jsList(presence)));
    await new Promise((resolve, reject) => channel.join().receive("ok", resolve).receive("error", reject));

    const py = new PythonPeer();
    await py.call("connect", { url: server.url, transport: pyTransport });
    await py.call("join", { topic: t, params: { presence: "bob" } });

    const keys = (list) => list.map((entry) => `${entry.key}:${entry.refs.length}`).join(",");
    const agree = async (expected, what) => {
      const lastJs = () => jsSyncs.entries.at(-1);
      const lastPy = () => py.events.filter((e) => e.presence && e.presence.topic === t).at(-1)?.presence.list;
      await jsSyncs.waitFor(() => lastJs() && keys(lastJs()) === expected, `JS presence is ${expected} (${what})`);
      await py.events.waitFor(() => lastPy() && keys(lastPy()) === expected, `Python presence is ${expected} (${what})`);
      assert.deepEqual(lastPy(), lastJs(), `same keys and phx_refs (${what})`);
    };
    await agree("ana:1,bob:1", "both joined");

    // a second connection of ana: two metas under one key, then gone again
    const js2 = await clients.open(server);
    const second = await join(js2, t, { presence: "ana" });
    assert.equal(second.join.status, "ok");
    await agree("ana:2,bob:1", "ana twice");
    await new Promise((resolve) => second.channel.leave().receive("ok", resolve));
    await agree("ana:1,bob:1", "ana's second connection left");

    await py.call("leave", { topic: t });
    await jsSyncs.waitFor(() => keys(jsSyncs.entries.at(-1)) === "ana:1", "JS sees bob leave");
  });
}

// JS long polling cannot receive binary frames: the JS side is a WebSocket client in both runs.
test("binary broadcasts cross between the JS and the Python client", async () => {
  const t = topic("pyjs-binary");
  const js = await clients.open(server, { via: "websocket" });
  const { channel, events } = await join(js, t, {}, { listen: ["shout"] });
  const py = new PythonPeer();
  await py.call("connect", { url: server.url, transport: "websocket" });
  await py.call("join", { topic: t, listen: ["shout"] });

  const fromJs = new Uint8Array([0, 1, 2, 254, 255]).buffer;
  assert.equal((await pushAsync(channel, "shout", fromJs)).status, "ok");
  const atPy = await py.events.waitFor((e) => e.message && e.message.event === "shout", "Python gets the JS bytes");
  assert.equal(hex(fromPython(atPy.message.payload)), hex(fromJs));

  const fromPy = { $bytes: [9, 8, 7, 0] };
  assert.equal((await py.call("push", { topic: t, event: "shout", payload: fromPy })).status, "ok");
  const atJs = await events.waitForCount((e) => e.type === "shout", 2, "JS gets the Python bytes");
  assert.ok(atJs[1].payload instanceof ArrayBuffer, "a binary broadcast is an ArrayBuffer in JS");
  assert.equal(hex(atJs[1].payload), hex(fromPython(fromPy)));
});

// -- the Presence helper's sync functions, JS and Python on the same inputs -----------------

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generateCases(count, seed) {
  const random = prng(seed);
  const pick = (n) => Math.floor(random() * n);
  const presences = () => {
    const state = {};
    for (const key of ["ana", "bob", "cy", "dee"].filter(() => random() < 0.6)) {
      const refs = [...new Set(Array.from({ length: 1 + pick(3) }, () => `r${pick(6)}`))];
      state[key] = { metas: refs.map((ref) => ({ phx_ref: ref, n: pick(100) })) };
    }
    return state;
  };
  return Array.from({ length: count }, () =>
    random() < 0.5
      ? { kind: "state", state: presences(), new: presences() }
      : { kind: "diff", state: presences(), diff: { joins: presences(), leaves: presences() } },
  );
}

function runInJs(testCase) {
  const calls = [];
  const copy = (value) => (value === undefined ? null : JSON.parse(JSON.stringify(value)));
  const onJoin = (key, current, joined) => calls.push(["join", key, copy(current), copy(joined)]);
  const onLeave = (key, current, left) => calls.push(["leave", key, copy(current), copy(left)]);
  const input = JSON.parse(JSON.stringify(testCase));
  const state =
    input.kind === "state"
      ? Presence.syncState(input.state, input.new, onJoin, onLeave)
      : Presence.syncDiff(input.state, input.diff, onJoin, onLeave);
  return { state: JSON.parse(JSON.stringify(state)), calls };
}

test("Presence.syncState and syncDiff: Python gives what JS gives", async () => {
  const cases = generateCases(300, 20261127);
  const py = new PythonPeer();
  const pyResults = await py.call("sync", { cases });
  assert.equal(pyResults.length, cases.length);
  cases.forEach((testCase, i) => {
    assert.deepEqual(pyResults[i], runInJs(testCase), `case ${i}: ${JSON.stringify(testCase)}`);
  });
});
