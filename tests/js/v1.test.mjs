// The V1 JSON serializer (vsn=1.0.0): the official phoenix JS client with
// `vsn: "1.0.0"` and custom encode/decode producing V1 JSON objects
// {"topic","event","payload","ref","join_ref"}. The server must answer with
// objects holding exactly topic/event/payload/ref (wire-protocol.md §5).
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { Clients, join, messagesFor, ping, pushAsync, startServer, topic } from "./helpers.mjs";

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

const V1_OPTIONS = {
  vsn: "1.0.0",
  encode(msg, callback) {
    return callback(
      JSON.stringify({
        topic: msg.topic,
        event: msg.event,
        payload: msg.payload,
        ref: msg.ref ?? null,
        join_ref: msg.join_ref ?? null,
      }),
    );
  },
  decode(raw, callback) {
    const obj = JSON.parse(raw);
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Error(`V1 frame is not a JSON object: ${raw}`);
    }
    return callback({ join_ref: obj.join_ref ?? null, ref: obj.ref, topic: obj.topic, event: obj.event, payload: obj.payload });
  },
};

function openV1(params = {}) {
  return clients.open(server, { params, ...V1_OPTIONS });
}

/** Every frame received so far is a V1 object with exactly topic/event/payload/ref. */
function assertV1Frames(client) {
  const frames = client.received.entries;
  assert.ok(frames.length > 0, "received some frames");
  for (const raw of frames) {
    assert.equal(typeof raw, "string", "V1 frames are text frames");
    const obj = JSON.parse(raw);
    assert.ok(obj !== null && typeof obj === "object" && !Array.isArray(obj), `V1 frame is an object: ${raw}`);
    assert.deepEqual(Object.keys(obj).sort(), ["event", "payload", "ref", "topic"], `V1 frame keys: ${raw}`);
  }
}

test("V1: join ok with reply payload, ok and error replies, bare ok", async () => {
  const client = await openV1({ user_id: "v1user" });
  assert.match(client.socket.endPointURL(), /[?&]vsn=1\.0\.0$/);
  const t = topic("v1-join");
  const { channel, join: result } = await join(client, t, { hi: "v1" });
  assert.equal(result.status, "ok");
  assert.deepEqual(result.response, { topic: t, user_id: "v1user", params: { hi: "v1" } });

  const echo = await pushAsync(channel, "echo", { hello: "world", n: 1, unicode: "héllo ✓" });
  assert.deepEqual([echo.status, echo.response], ["ok", { hello: "world", n: 1, unicode: "héllo ✓" }]);
  const err = await pushAsync(channel, "error_reply", { why: "nope" });
  assert.deepEqual([err.status, err.response], ["error", { why: "nope" }]);
  const bare = await pushAsync(channel, "ok_bare", {});
  assert.deepEqual([bare.status, bare.response], ["ok", {}]);

  const replies = messagesFor(client, t, "phx_reply");
  assert.deepEqual(
    replies.map((m) => m.ref),
    [result.joinRef, echo.ref, err.ref, bare.ref],
    "each reply echoes its ref",
  );
  assertV1Frames(client);
  // The exact reply object for the echo.
  const echoRaw = client.received.entries.map((f) => JSON.parse(f)).find((o) => o.ref === echo.ref);
  assert.deepEqual(echoRaw, {
    topic: t,
    event: "phx_reply",
    ref: echo.ref,
    payload: { status: "ok", response: { hello: "world", n: 1, unicode: "héllo ✓" } },
  });
});

test("V1: a broadcast reaches V1 clients as objects and V2 clients as arrays", async () => {
  const t = topic("v1-bcast");
  const v1a = await openV1({ user_id: "v1a" });
  const v1b = await openV1({ user_id: "v1b" });
  const v2 = await clients.open(server, { params: { user_id: "v2" } });
  const a = await join(v1a, t, {}, { listen: ["shout"] });
  const b = await join(v1b, t, {}, { listen: ["shout"] });
  const c = await join(v2, t, {}, { listen: ["shout"] });

  const payload = { s: 1, text: "to all serializers" };
  const result = await pushAsync(a.channel, "shout", payload);
  assert.equal(result.status, "ok");
  for (const [name, m] of [["v1a", a], ["v1b", b], ["v2", c]]) {
    const got = await m.events.waitFor((e) => e.type === "shout", `${name} receives the shout`);
    assert.deepEqual(got.payload, payload);
  }
  await Promise.all([ping(v1a), ping(v1b), ping(v2)]);
  for (const [name, m] of [["v1a", a], ["v1b", b], ["v2", c]]) {
    assert.equal(m.events.count((e) => e.type === "shout"), 1, `${name} got exactly one shout`);
  }

  assertV1Frames(v1a);
  assertV1Frames(v1b);
  const v1Frame = v1b.received.entries.map((f) => JSON.parse(f)).find((o) => o.event === "shout");
  assert.deepEqual(v1Frame, { topic: t, event: "shout", payload, ref: null });
  const v2Frame = v2.received.entries.map((f) => JSON.parse(f)).find((f) => Array.isArray(f) && f[3] === "shout");
  assert.deepEqual(v2Frame, [null, null, t, "shout", payload]);
});

test("V1: intercepted broadcast via handle_out and server push after join", async () => {
  const t = topic("v1-push");
  const client = await openV1({ user_id: "v1push" });
  const { channel, events } = await join(client, t, { after_join: true }, { listen: ["welcome", "censored"] });
  const welcome = await events.waitFor((e) => e.type === "welcome", "welcome push (V1)");
  assert.deepEqual(welcome.payload, { topic: t, user_id: "v1push" });
  const result = await pushAsync(channel, "say_censored", { body: "darn" });
  assert.equal(result.status, "ok");
  const censored = await events.waitFor((e) => e.type === "censored", "censored push (V1)");
  assert.deepEqual(censored.payload, { body: "****", seen_by: "v1push" });
  assertV1Frames(client);
  const raw = client.received.entries.map((f) => JSON.parse(f)).find((o) => o.event === "welcome");
  assert.equal(raw.ref, null, "V1 push has ref null");
});

test("V1: heartbeat replies", async () => {
  const client = await openV1();
  const rtt = await ping(client);
  assert.ok(rtt >= 0);
  const reply = messagesFor(client, "phoenix", "phx_reply")[0];
  assert.deepEqual(reply.payload, { status: "ok", response: {} });
  assertV1Frames(client);
});

test("V1: channel crash -> phx_error -> automatic rejoin", async () => {
  const client = await openV1();
  const t = topic("v1-crash");
  const { channel, events } = await join(client, t);
  channel.push("crash", {}, 2000);
  const errored = await events.waitFor((e) => e.type === "error", "phx_error (V1)");
  assert.deepEqual(errored.payload, { reason: "channel_crash" });
  await events.waitForCount((e) => e.type === "join_ok", 2, "automatic rejoin (V1)");
  const echo = await pushAsync(channel, "echo", { v1: "again" });
  assert.deepEqual([echo.status, echo.response], ["ok", { v1: "again" }]);
  assertV1Frames(client);
});
