// Broadcasts with the official phoenix JS client: broadcast to three clients,
// broadcast_from skipping the sender, intercept + handle_out, Endpoint.broadcast,
// and no delivery to a client that left.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { Clients, join, messagesFor, ping, pushAsync, startServer, topic, WAIT_MS } from "./helpers.mjs";

let server;
const clients = new Clients();

before(async () => {
  server = await startServer();
});
afterEach(() => clients.closeAll());
after(async () => {
  await clients.closeAll();
  if (server) await server.stop();
});

/** Opens `users.length` sockets (user_id = name) and joins all of them to `t`. */
async function joinAll(t, users, listen) {
  const members = [];
  for (const user of users) {
    const client = await clients.open(server, { params: { user_id: user } });
    const { channel, events, join: result } = await join(client, t, {}, { listen });
    assert.equal(result.status, "ok", `${user} joined ${t}`);
    members.push({ user, client, channel, events });
  }
  return members;
}

/** Heartbeat round trip on every member: frames sent before it have arrived. */
async function barrier(members) {
  await Promise.all(members.map((m) => ping(m.client)));
}

test("broadcast reaches all three joined clients exactly once (join_ref null)", async () => {
  const t = topic("bcast");
  const members = await joinAll(t, ["u1", "u2", "u3"], ["shout"]);
  const payload = { body: "hello everyone", n: 3, unicode: "✓" };

  const result = await pushAsync(members[0].channel, "shout", payload);
  assert.equal(result.status, "ok");

  for (const m of members) {
    const got = await m.events.waitFor((e) => e.type === "shout", `${m.user} receives the shout`);
    assert.deepEqual(got.payload, payload);
  }
  await barrier(members);
  for (const m of members) {
    assert.equal(m.events.count((e) => e.type === "shout"), 1, `${m.user} got exactly one shout`);
    const [frame] = messagesFor(m.client, t, "shout");
    assert.equal(frame.join_ref, null, "a broadcast carries join_ref null");
    assert.equal(frame.ref, null, "a broadcast carries ref null");
  }
});

test("broadcasts from different senders all reach everyone, in each sender's order", async () => {
  const t = topic("bcast-many");
  const members = await joinAll(t, ["m1", "m2", "m3"], ["shout"]);
  for (let i = 0; i < 5; i++) {
    for (const m of members) {
      const r = await pushAsync(m.channel, "shout", { from: m.user, i });
      assert.equal(r.status, "ok");
    }
  }
  for (const m of members) {
    const got = await m.events.waitForCount((e) => e.type === "shout", 15, `${m.user} receives 15 shouts`);
    for (const sender of members) {
      assert.deepEqual(
        got.filter((e) => e.payload.from === sender.user).map((e) => e.payload.i),
        [0, 1, 2, 3, 4],
        `${m.user} sees ${sender.user}'s shouts in order`,
      );
    }
  }
});

test("broadcast_from skips the sender's own client", async () => {
  const t = topic("bcast-from");
  const members = await joinAll(t, ["s1", "s2", "s3"], ["shout"]);
  const payload = { body: "not for me" };

  const result = await pushAsync(members[0].channel, "shout_from", payload);
  assert.equal(result.status, "ok");
  for (const m of members.slice(1)) {
    const got = await m.events.waitFor((e) => e.type === "shout", `${m.user} receives the broadcast_from`);
    assert.deepEqual(got.payload, payload);
  }
  await barrier(members);
  assert.equal(members[0].events.count((e) => e.type === "shout"), 0, "the sender did not receive it");
  assert.equal(messagesFor(members[0].client, t, "shout").length, 0, "no shout frame reached the sender");
  for (const m of members.slice(1)) assert.equal(m.events.count((e) => e.type === "shout"), 1);
});

test("intercepted event goes through handle_out: each client gets its own modified payload", async () => {
  const t = topic("intercept");
  const members = await joinAll(t, ["alice", "bob", "carol"], ["censored"]);

  const result = await pushAsync(members[1].channel, "say_censored", { body: "darn it", from: "bob" });
  assert.equal(result.status, "ok");
  for (const m of members) {
    const got = await m.events.waitFor((e) => e.type === "censored", `${m.user} receives the censored message`);
    assert.deepEqual(got.payload, { body: "**** it", from: "bob", seen_by: m.user });
  }
  await barrier(members);
  for (const m of members) {
    assert.equal(m.events.count((e) => e.type === "censored"), 1, `${m.user} got exactly one`);
    // handle_out pushes with self.push: a channel push, tagged with this join's join_ref.
    const [frame] = messagesFor(m.client, t, "censored");
    assert.equal(frame.join_ref, m.channel.joinRef(), `${m.user}: handle_out push carries the join_ref`);
    assert.equal(frame.ref, null);
  }
});

test("Endpoint.broadcast reaches every subscriber of the topic", async () => {
  const t = topic("announce");
  const members = await joinAll(t, ["e1", "e2", "e3"], ["announcement"]);
  const result = await pushAsync(members[2].channel, "announce", { text: "server says hi" });
  assert.equal(result.status, "ok");
  for (const m of members) {
    const got = await m.events.waitFor((e) => e.type === "announcement", `${m.user} receives the announcement`);
    assert.deepEqual(got.payload, { text: "server says hi" });
  }
});

test("broadcasts do not reach other topics or clients that left", async () => {
  const t = topic("scoped");
  const other = topic("scoped-other");
  const [stayer, leaver] = await joinAll(t, ["stay", "leave"], ["shout"]);
  const outsider = await clients.open(server, { params: { user_id: "outside" } });
  const outsiderChan = await join(outsider, other, {}, { listen: ["shout"] });

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("leave got no ok reply")), WAIT_MS);
    leaver.channel.leave().receive("ok", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  await leaver.client.log.waitFor(
    (e) => e.type === "message" && e.topic === t && e.event === "phx_close",
    "server confirms the leave with phx_close",
  );

  const result = await pushAsync(stayer.channel, "shout", { after: "leave" });
  assert.equal(result.status, "ok");
  const got = await stayer.events.waitFor((e) => e.type === "shout", "the remaining member receives the shout");
  assert.deepEqual(got.payload, { after: "leave" });

  await Promise.all([ping(leaver.client), ping(outsider)]);
  assert.equal(messagesFor(leaver.client, t, "shout").length, 0, "no shout frame reached the client that left");
  assert.equal(outsider.log.count((e) => e.type === "message" && e.event === "shout"), 0, "other topic unaffected");
  assert.equal(outsiderChan.events.count((e) => e.type === "shout"), 0);
});
