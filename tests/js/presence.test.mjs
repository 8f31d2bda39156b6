// Presence with the official client's `Presence` helper (onSync/onJoin/onLeave/list).
//
// After every step, each client's helper list must equal the server's truth
// (the `list` event answers `presence.list(topic)`), compared as
// key -> sorted phx_refs. One node first; then two nodes over Redis; then a
// three-node cluster where one node is killed with SIGKILL: the others
// broadcast the leaves of its presences after the (short) down period, and
// its clients reconnect to the surviving nodes and reappear.
//
// The multi-node tests need Redis at PHX_TEST_REDIS_URL (`make test` starts a
// private one; default redis://127.0.0.1:6379/0); they skip without it, except with CI=true
// where a missing Redis fails them. Each run uses its own channel prefix.
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Presence } from "phoenix";
import { Clients, EventLog, WAIT_MS, outcome, pushAsync, startServer, topic } from "./helpers.mjs";

const APP = "tests.js.presence_app:endpoint";
const REDIS_URL = process.env.PHX_TEST_REDIS_URL || "redis://127.0.0.1:6379/0";
const clients = new Clients();
const servers = [];

afterEach(() => clients.closeAll());
after(async () => {
  await clients.closeAll();
  await Promise.all(servers.map((s) => s.stop()));
});

function redisReachable() {
  const { hostname, port } = new URL(REDIS_URL);
  return new Promise((resolve) => {
    const sock = net.connect({ host: hostname, port: Number(port || 6379) });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
    sock.setTimeout(1000, () => done(false));
  });
}

const redisSkip = (await redisReachable()) || process.env.CI === "true"
  ? false
  : `Redis is not running at ${REDIS_URL} (bash .ci/run starts it; or set PHX_TEST_REDIS_URL)`;

async function startNode(env = {}) {
  const server = await startServer({ app: APP, env });
  servers.push(server);
  return server;
}

function redisCluster() {
  const prefix = `presence-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  return (node, extra = {}) =>
    startNode({
      PHX_PRESENCE_ENGINE: "redis",
      PHX_PRESENCE_URL: REDIS_URL,
      PHX_PRESENCE_PREFIX: prefix,
      PHX_PRESENCE_NODE: node,
      PHX_PRESENCE_BROADCAST_PERIOD: "0.1",
      ...extra,
    });
}

/** key -> sorted phx_refs, keys sorted: what a list shows, comparable with deepEqual. */
function shape(entries) {
  const out = {};
  for (const [key, metas] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    out[key] = metas.map((m) => m.phx_ref).sort();
  }
  return out;
}

const helperView = (m) => shape(m.presence.list((key, { metas }) => [key, metas]));
const serverView = (presences) => shape(Object.entries(presences).map(([k, v]) => [k, v.metas]));

/** Joins `topicName` as `user` on `device`, with a Presence helper recording its callbacks. */
async function member(server, topicName, user, device) {
  const client = await clients.open(server);
  const channel = client.socket.channel(topicName, { user, device });
  const presence = new Presence(channel);
  const callbacks = new EventLog(`${user}/${device} presence callbacks`);
  presence.onSync(() => callbacks.push({ type: "sync" }));
  presence.onJoin((key, current, joined) =>
    callbacks.push({ type: "join", key, current: current ? current.metas.length : 0, joined: joined.metas.length }),
  );
  presence.onLeave((key, current, left) =>
    callbacks.push({ type: "leave", key, current: current.metas.length, left: left.metas.length }),
  );
  const joined = await outcome(channel.join(), `${user}/${device} joins ${topicName}`);
  assert.equal(joined.status, "ok", JSON.stringify(joined));
  await callbacks.waitFor((e) => e.type === "sync", `${user}/${device} gets its first presence sync`);
  return { client, channel, presence, callbacks, user, device, server };
}

async function truth(m) {
  const { status, response } = await pushAsync(m.channel, "list", {});
  assert.equal(status, "ok");
  return serverView(response.presences);
}

/**
 * Waits until the truth of every node (asked through `askers`, one member per
 * node) is the same and every member's helper shows it; resolves with it.
 */
// Until every node asked and every helper agree, on a list that passes `until` (the
// change just made has landed: an agreement on the list from before it does not count).
async function settled(members, askers = [members[0]], ms = WAIT_MS * 2, what = "", until = () => true) {
  const deadline = Date.now() + ms;
  let last = null;
  for (;;) {
    const truths = await Promise.all(askers.map(truth));
    const views = members.map(helperView);
    const agreed = truths.every((t) => JSON.stringify(t) === JSON.stringify(truths[0]));
    if (agreed && until(truths[0]) && views.every((v) => JSON.stringify(v) === JSON.stringify(truths[0]))) return truths[0];
    last = { truths, views: Object.fromEntries(members.map((m, i) => [`${m.user}/${m.device}`, views[i]])) };
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for every helper to equal the server's list ${what}\n${JSON.stringify(last, null, 1)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const devicesOf = (m, key) => (m.presence.list((k, p) => [k, p]).find(([k]) => k === key) || [null, { metas: [] }])[1].metas.map((x) => x.device).sort();

test("one node: joins, a second device, an update, a leave and a disconnect", async () => {
  const server = await startNode();
  const t = topic("presence");
  const alice = await member(server, t, "alice", "phone");
  assert.deepEqual(Object.keys(await settled([alice])), ["alice"]);

  const bob = await member(server, t, "bob", "web");
  let now = await settled([alice, bob]);
  assert.deepEqual(Object.keys(now), ["alice", "bob"]);

  const laptop = await member(server, t, "alice", "laptop");
  now = await settled([alice, bob, laptop]);
  assert.equal(now.alice.length, 2, "one key, two metas");
  assert.deepEqual(devicesOf(bob, "alice"), ["laptop", "phone"]);
  await alice.callbacks.waitFor((e) => e.type === "join" && e.key === "alice" && e.current === 1 && e.joined === 1,
    "alice's phone hears onJoin for her laptop with her phone as the current presence");

  const before = now.bob;
  const status = await pushAsync(bob.channel, "status", { status: "away" });
  assert.equal(status.status, "ok");
  now = await settled([alice, bob, laptop]);
  assert.deepEqual(now.bob, [status.response.ref], "an update leaves one meta, with the new ref");
  assert.notDeepEqual(now.bob, before);
  const bobMeta = alice.presence.list((k, p) => [k, p]).find(([k]) => k === "bob")[1].metas[0];
  assert.equal(bobMeta.status, "away");
  assert.equal(bobMeta.phx_ref_prev, before[0]);

  await outcome(laptop.channel.leave(), "the laptop leaves");
  now = await settled([alice, bob], [alice], WAIT_MS * 2, "(the laptop left)", (l) => l.alice?.length === 1);
  assert.equal(now.alice.length, 1);
  assert.deepEqual(devicesOf(bob, "alice"), ["phone"]);
  await bob.callbacks.waitFor((e) => e.type === "leave" && e.key === "alice" && e.current === 1 && e.left === 1,
    "bob hears onLeave for alice's laptop, her phone still present");

  bob.client.socket.disconnect();
  now = await settled([alice], [alice], WAIT_MS * 2, "(bob disconnected)", (l) => !("bob" in l));
  assert.deepEqual(Object.keys(now), ["alice"]);
  await alice.callbacks.waitFor((e) => e.type === "leave" && e.key === "bob" && e.current === 0,
    "alice hears bob leave for good when his socket closes");
});

test("untracking keeps the channel joined and removes the presence everywhere", async () => {
  const server = await startNode();
  const t = topic("untrack");
  const a = await member(server, t, "a", "web");
  const b = await member(server, t, "b", "web");
  await settled([a, b]);
  const { status } = await pushAsync(b.channel, "untrack", {});
  assert.equal(status, "ok");
  const now = await settled([a, b], [a], WAIT_MS * 2, "(b untracked)", (l) => !("b" in l));
  assert.deepEqual(Object.keys(now), ["a"]);
  assert.equal(b.channel.state, "joined");
});

test("two nodes over Redis: each client sees the other node's clients", { skip: redisSkip }, async () => {
  const node = redisCluster();
  const [n1, n2] = await Promise.all([node("n1"), node("n2")]);
  const t = topic("two-nodes");
  // carol stays on n1 and bob on n2 throughout: they ask each node for its truth.
  const carol = await member(n1, t, "carol", "web");
  const bob = await member(n2, t, "bob", "web");
  const askers = [carol, bob];
  let now = await settled([carol, bob], askers, 20000, "(carol on n1, bob on n2)");
  assert.deepEqual(Object.keys(now), ["bob", "carol"]);

  const alice = await member(n1, t, "alice", "phone");
  const laptop = await member(n2, t, "alice", "laptop");
  now = await settled([carol, bob, alice, laptop], askers, 20000, "(alice on both nodes)",
    (l) => l.alice?.length === 2);
  assert.equal(now.alice.length, 2, "one key, two metas, from two nodes");
  assert.deepEqual(devicesOf(carol, "alice"), ["laptop", "phone"]);
  assert.deepEqual(devicesOf(bob, "alice"), ["laptop", "phone"]);

  const status = await pushAsync(bob.channel, "status", { status: "busy" });
  now = await settled([carol, bob, alice, laptop], askers, 20000, "(bob's update on n2)",
    (l) => JSON.stringify(l.bob) === JSON.stringify([status.response.ref]));
  assert.deepEqual(now.bob, [status.response.ref]);
  const seenByCarol = carol.presence.list((k, p) => [k, p]).find(([k]) => k === "bob")[1].metas;
  assert.equal(seenByCarol.length, 1);
  assert.equal(seenByCarol[0].status, "busy");

  await outcome(alice.channel.leave(), "alice's phone leaves n1");
  now = await settled([carol, bob, laptop], askers, 20000, "(alice's phone left n1)",
    (l) => l.alice?.length === 1);
  assert.deepEqual(devicesOf(bob, "alice"), ["laptop"]);

  laptop.client.socket.disconnect();
  now = await settled([carol, bob], askers, 20000, "(alice's laptop disconnected from n2)",
    (l) => !("alice" in l));
  assert.deepEqual(Object.keys(now), ["bob", "carol"]);
});

test("a node killed with SIGKILL: its presences leave everywhere, its clients come back elsewhere",
  { skip: redisSkip }, async (t) => {
    const node = redisCluster();
    const env = { PHX_PRESENCE_DOWN_PERIOD: "1.0" };
    const [n1, n2, n3] = await Promise.all([node("n1", env), node("n2", env), node("n3", env)]);
    const room = topic("failover");
    const one = await member(n1, room, "u1", "web");
    const two = await member(n2, room, "u2", "web");
    const three = await member(n3, room, "u3", "phone");
    const threeB = await member(n3, room, "u3", "tablet");
    let now = await settled([one, two, three, threeB], [one, two, three], 20000, "(three nodes)");
    assert.deepEqual(Object.keys(now), ["u1", "u2", "u3"]);
    assert.equal(now.u3.length, 2);

    const killedAt = Date.now();
    const exit = await n3.kill("SIGKILL");
    assert.equal(exit.signal, "SIGKILL");
    // The survivors declare n3 down after the down period and broadcast the leaves.
    for (const m of [one, two]) {
      await m.callbacks.waitFor((e) => e.type === "leave" && e.key === "u3" && e.current === 0,
        `${m.user} hears u3 leave after n3 is killed`, 20000);
    }
    t.diagnostic(`leaves of the killed node's presences arrived ${Date.now() - killedAt} ms after SIGKILL (down_period 1000 ms)`);
    now = await settled([one, two], [one, two], 20000, "(after the kill)");
    assert.deepEqual(Object.keys(now), ["u1", "u2"]);

    // A load balancer would send the killed node's clients elsewhere: point them at n1 and n2.
    three.client.socket.endPoint = `${n1.url}/websocket`;
    threeB.client.socket.endPoint = `${n2.url}/websocket`;
    await three.client.log.waitForCount((e) => e.type === "open", 2, "u3's phone reconnects to n1", 20000);
    await threeB.client.log.waitForCount((e) => e.type === "open", 2, "u3's tablet reconnects to n2", 20000);
    now = await settled([one, two, three, threeB], [one, two], 20000, "(u3 back on n1 and n2)");
    assert.deepEqual(Object.keys(now), ["u1", "u2", "u3"]);
    assert.equal(now.u3.length, 2);
    assert.deepEqual(devicesOf(one, "u3"), ["phone", "tablet"]);
  });

test("batched diffs (diff_interval): every helper equals the server's list after churn", async () => {
  const server = await startNode({ PHX_PRESENCE_DIFF_INTERVAL: "0.3" });
  const t = topic("batched");
  const watchers = [await member(server, t, "w1", "web"), await member(server, t, "w2", "web")];
  const diffs = watchers.map(() => 0);
  watchers.forEach((w, i) => w.channel.on("presence_diff", () => { diffs[i] += 1; }));
  // Churn: 40 clients join (some keys twice), a third update, half leave or disconnect,
  // while a late watcher joins in the middle (its state is taken mid-interval).
  const churners = await Promise.all(
    Array.from({ length: 40 }, (_, i) => member(server, t, `c${i % 25}`, `d${i}`)),
  );
  const late = await member(server, t, "late", "web");
  await Promise.all(churners.filter((_, i) => i % 3 === 0).map((m) => pushAsync(m.channel, "status", { status: "away" })));
  await Promise.all(churners.filter((_, i) => i % 2 === 0).map((m, j) =>
    j % 2 ? outcome(m.channel.leave(), `${m.user}/${m.device} leaves`) : Promise.resolve(m.client.socket.disconnect())));
  const everyone = [...watchers, late, ...churners.filter((_, i) => i % 2 === 1)];
  const now = await settled(everyone, [watchers[0]], WAIT_MS * 4, "(after the churn)");
  assert.equal(Object.values(now).reduce((n, refs) => n + refs.length, 0), 2 + 1 + 20);
  // 40 joins + 14 updates + 20 leaves + late's join: batched into a few diffs.
  const changes = 40 + 14 + 20 + 1;
  for (const n of diffs) assert.ok(n < changes / 2, `a watcher got ${n} presence_diff for ${changes} changes`);
});

test("count mode: members get presence_count, never a list or a diff", async () => {
  const server = await startNode();
  const t = topic("count");
  const fans = [];
  const seen = [];
  for (let i = 0; i < 6; i++) {
    const client = await clients.open(server);
    const channel = client.socket.channel(t, { user: `fan${i}`, device: "web" });
    const log = new EventLog(`fan${i} counts`);
    for (const event of ["presence_count", "presence_state", "presence_diff"]) {
      channel.on(event, (payload) => log.push({ event, payload }));
    }
    const joined = await outcome(channel.join(), `fan${i} joins ${t}`);
    assert.equal(joined.status, "ok");
    await log.waitFor((e) => e.event === "presence_count", `fan${i} gets a count after its join`);
    fans.push({ client, channel, log });
    seen.push(log);
  }
  const mark = fans[0].log.entries.length;
  await outcome(fans[5].channel.leave(), "fan5 leaves");
  fans[4].client.socket.disconnect();
  const { response } = await pushAsync(fans[0].channel, "count", {});
  assert.equal(response.count, 4);
  const log0 = fans[0].log;
  await log0.waitFor((e) => e.event === "presence_count" && e.payload.count === 4 && log0.entries.indexOf(e) >= mark,
    "fan0 hears the count drop to 4");
  for (const log of seen.slice(0, 4)) {
    assert.ok(log.entries.every((e) => e.event === "presence_count"), JSON.stringify(log.entries));
  }
});
