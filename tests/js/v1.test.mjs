// The V1 JSON serializer (vsn=1.0.0): the official phoenix JS client with
// `vsn: "1.0.0"` and custom encode/decode producing V1 JSON objects
// {"topic","event","payload","ref","join_ref"}. The server must answer with
// objects holding exactly topic/event/payload/ref (wire-protocol.md §5).
//
// Over long polling (PHX_TRANSPORT=longpoll) the official client cannot speak
// V1 at all, and the tests below assert what really happens (phoenix 1.8.16):
//
// * With the `LongPoll` class itself as transport (or no WebSocket global),
//   Socket ignores the encode/decode options (socket.js: `if(this.transport
//   !== LongPoll)`), so it sends V2 arrays on a vsn=1.0.0 connection. The
//   server's V1 serializer refuses the first one and closes the session; the
//   next poll gets 410, LongPoll closes with 3410 "session_gone", reconnects,
//   and so on forever: the join is never answered.
// * With a LongPoll subclass (our recording one), or after a WebSocket socket
//   fell back to LongPoll (`longPollFallbackMs`), the custom encode/decode are
//   kept, but LongPoll always POSTs `application/x-ndjson`, where a line that
//   does not start with "[" is base64 of a binary frame (long-poll.md §6, as
//   in Phoenix). A V1 object line is not base64: HTTP 400, LongPoll closes
//   with 1011 and reconnects, forever: the join is never answered.
//
// The server's V1 long-poll path itself works with a client that POSTs one
// V1 frame per request with another content type (long-poll.md §6); the
// "raw V1 long-poll client" tests drive it with the same assertions as the
// WebSocket V1 tests.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  Clients,
  EventLog,
  join,
  LONGPOLL,
  LongPoll,
  messagesFor,
  ping,
  pushAsync,
  startServer,
  topic,
  WAIT_MS,
  withTimeout,
} from "./helpers.mjs";

let server;
const clients = new Clients();
const rawClients = [];

before(async () => {
  server = await startServer();
});
afterEach(async () => {
  for (const raw of rawClients.splice(0)) raw.close();
  await clients.closeAll();
});
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

/**
 * A minimal long-poll client speaking V1 the way the server expects from a
 * non-ndjson client (long-poll.md §6): one JSON object frame per POST, with
 * content-type application/json. Its poll loop records every received frame,
 * decoded, in `frames`; `rawFrames` keeps the strings.
 */
class RawV1LongPoll {
  constructor(srv, params = {}) {
    this.base = `http://127.0.0.1:${srv.port}/socket/longpoll?${new URLSearchParams({ ...params, vsn: "1.0.0" })}`;
    this.token = null;
    this.frames = new EventLog("raw V1 long-poll frames");
    this.rawFrames = [];
    this.problems = [];
    this.refs = 0;
    this.closed = false;
    this.abort = new AbortController();
    rawClients.push(this);
  }

  url() {
    return this.token ? `${this.base}&token=${encodeURIComponent(this.token)}` : this.base;
  }

  async request(method, body, contentType) {
    const headers = body === undefined ? { accept: "application/json" } : { "content-type": contentType };
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(WAIT_MS + 3000)]);
    const resp = await fetch(this.url(), { method, headers, body, signal });
    return { status: resp.status, text: await resp.text() };
  }

  /** Creates the session (410 + token) and starts polling. */
  async open() {
    const first = await this.request("GET");
    const body = JSON.parse(first.text);
    assert.deepEqual([first.status, body.status, body.messages], [200, 410, []], "a new long-poll session");
    this.token = body.token;
    this.loop();
    return this;
  }

  async loop() {
    while (!this.closed) {
      let resp;
      try {
        resp = await this.request("GET");
      } catch (err) {
        if (!this.closed) this.problems.push(String(err));
        return;
      }
      const body = JSON.parse(resp.text);
      if (body.status === 200) {
        for (const m of body.messages) {
          this.rawFrames.push(m);
          this.frames.push(JSON.parse(m));
        }
      } else if (body.status !== 204) {
        this.problems.push(resp.text);
        return;
      }
    }
  }

  post(text, contentType) {
    return this.request("POST", text, contentType);
  }

  ref() {
    this.refs += 1;
    return String(this.refs);
  }

  async send(frame) {
    const resp = await this.post(JSON.stringify(frame), "application/json");
    assert.deepEqual([resp.status, JSON.parse(resp.text)], [200, { status: 200 }], `POST of ${frame.event}`);
  }

  waitFor(pred, description) {
    return this.frames.waitFor(pred, `${description} (poll problems: ${JSON.stringify(this.problems)})`);
  }

  /** Sends a frame with a fresh ref and resolves with its phx_reply (a V1 object). */
  async push(t, event, payload, joinRef = this.joinRefs?.[t] ?? null) {
    const ref = this.ref();
    await this.send({ topic: t, event, payload, ref, join_ref: joinRef });
    return this.waitFor((f) => f.event === "phx_reply" && f.ref === ref && f.topic === t, `reply to ${event} on ${t} (ref ${ref})`);
  }

  async join(t, params = {}) {
    const ref = this.ref();
    this.joinRefs = { ...this.joinRefs, [t]: ref };
    await this.send({ topic: t, event: "phx_join", payload: params, ref, join_ref: ref });
    const reply = await this.waitFor((f) => f.event === "phx_reply" && f.ref === ref, `join reply on ${t}`);
    assert.equal(reply.payload.status, "ok", `join of ${t}: ${JSON.stringify(reply)}`);
    return reply;
  }

  heartbeat() {
    return this.push("phoenix", "heartbeat", {}, null);
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

async function openRaw(params = {}) {
  return withTimeout(new RawV1LongPoll(server, params).open(), WAIT_MS, "raw V1 long-poll session opens");
}

/** Every frame a raw client received is a V1 object with exactly topic/event/payload/ref. */
function assertRawV1Frames(raw) {
  assert.ok(raw.rawFrames.length > 0, "received some frames");
  for (const text of raw.rawFrames) {
    const obj = JSON.parse(text);
    assert.ok(obj !== null && typeof obj === "object" && !Array.isArray(obj), `V1 frame is an object: ${text}`);
    assert.deepEqual(Object.keys(obj).sort(), ["event", "payload", "ref", "topic"], `V1 frame keys: ${text}`);
  }
}

if (!LONGPOLL) {
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
} else {
  // -- the official client over long poll: what really happens -------------------

  test("long poll: the LongPoll class itself drops custom encode/decode; V2 frames on a V1 session end it (410 -> 3410), the join never succeeds", async () => {
    const client = await clients.open(server, { ...V1_OPTIONS, transport: LongPoll });
    assert.equal(client.socket.encode, client.socket.defaultEncoder, "Socket uses the default (V2) encoder with LongPoll");
    assert.equal(client.socket.decode, client.socket.defaultDecoder, "Socket uses the default (V2) decoder with LongPoll");
    assert.match(client.socket.endPointURL(), /[?&]vsn=1\.0\.0$/, "while still asking for vsn 1.0.0");
    const t = topic("v1-lp-class");
    const channel = client.socket.channel(t, {});
    const events = new EventLog(`channel ${t} events`);
    channel.onError((reason) => events.push({ type: "error", payload: reason }));
    channel.join().receive("ok", (r) => events.push({ type: "join_ok", payload: r })).receive("error", (r) => events.push({ type: "join_error", payload: r }));

    // The server closes the session on the V2 array; the client learns it from the next poll.
    const closes = await client.log.waitForCount((e) => e.type === "close", 2, "two 3410 closes (one per reconnect)");
    for (const c of closes) assert.deepEqual([c.code, c.reason], [3410, "session_gone"]);
    assert.ok(client.log.count((e) => e.type === "open") >= 2, "the client reconnected");
    assert.deepEqual(
      [...new Set(client.log.filter((e) => e.type === "error").map((e) => e.message))],
      ["410"],
      "LongPoll reports the 410 poll as its error",
    );
    assert.ok(events.count((e) => e.type === "error") >= 2, "the channel errors with each lost session");
    assert.equal(events.count((e) => e.type === "join_ok" || e.type === "join_error"), 0, "the join was never answered");
    assert.equal(client.log.count((e) => e.type === "message"), 0, "no message reached the client");
    client.socket.disconnect();
  });

  test("long poll: a LongPoll subclass keeps custom V1 encode/decode; its ndjson POST of a V1 object is refused (HTTP 400 -> 1011)", async () => {
    const client = await openV1();
    assert.notEqual(client.socket.encode, client.socket.defaultEncoder, "custom encode kept for a LongPoll subclass");
    const t = topic("v1-lp-subclass");
    const channel = client.socket.channel(t, {});
    const events = new EventLog(`channel ${t} events`);
    channel.onError((reason) => events.push({ type: "error", payload: reason }));
    channel.join().receive("ok", (r) => events.push({ type: "join_ok", payload: r })).receive("error", (r) => events.push({ type: "join_error", payload: r }));

    const closes = await client.log.waitForCount((e) => e.type === "close", 2, "two 1011 closes (one per reconnect)");
    for (const c of closes) assert.deepEqual([c.code, c.reason], [1011, "internal server error"]);
    // The join went out as a V1 object (LongPoll then POSTs it as an ndjson line).
    const sentJoin = JSON.parse(client.sent.entries.find((f) => typeof f === "string" && f.includes('"phx_join"')));
    assert.deepEqual(Object.keys(sentJoin).sort(), ["event", "join_ref", "payload", "ref", "topic"]);
    assert.equal(events.count((e) => e.type === "join_ok" || e.type === "join_error"), 0, "the join was never answered");
    assert.equal(client.received.entries.length, 0, "no message reached the client");
    client.socket.disconnect();

    // The same request by hand: an ndjson POST with a V1 object line is an HTTP 400 (empty body) ...
    const raw = new RawV1LongPoll(server);
    await raw.open();
    const refused = await raw.post(JSON.stringify(sentJoin), "application/x-ndjson");
    assert.deepEqual([refused.status, refused.text], [400, ""]);
    // ... while the same frame as a whole-body (non-ndjson) POST is accepted and joins.
    const accepted = await raw.post(JSON.stringify(sentJoin), "application/json");
    assert.deepEqual([accepted.status, JSON.parse(accepted.text)], [200, { status: 200 }]);
    const reply = await raw.waitFor((f) => f.event === "phx_reply" && f.ref === sentJoin.ref, "join reply");
    assert.equal(reply.payload.status, "ok");
  });

  // -- the server's V1 long-poll path, with a raw client (one frame per POST) ---------

  test("raw V1 long-poll client: join ok with reply payload, ok and error replies, bare ok", async () => {
    const raw = await openRaw({ user_id: "v1user" });
    const t = topic("v1-join");
    const joined = await raw.join(t, { hi: "v1" });
    assert.deepEqual(joined.payload, { status: "ok", response: { topic: t, user_id: "v1user", params: { hi: "v1" } } });

    const echo = await raw.push(t, "echo", { hello: "world", n: 1, unicode: "héllo ✓" });
    assert.deepEqual(echo.payload, { status: "ok", response: { hello: "world", n: 1, unicode: "héllo ✓" } });
    const err = await raw.push(t, "error_reply", { why: "nope" });
    assert.deepEqual(err.payload, { status: "error", response: { why: "nope" } });
    const bare = await raw.push(t, "ok_bare", {});
    assert.deepEqual(bare.payload, { status: "ok", response: {} });

    assert.deepEqual(
      raw.frames.filter((f) => f.topic === t && f.event === "phx_reply").map((f) => f.ref),
      [joined.ref, echo.ref, err.ref, bare.ref],
      "each reply echoes its ref",
    );
    assertRawV1Frames(raw);
    assert.deepEqual(echo, {
      topic: t,
      event: "phx_reply",
      ref: echo.ref,
      payload: { status: "ok", response: { hello: "world", n: 1, unicode: "héllo ✓" } },
    });
  });

  test("raw V1 long-poll client: a broadcast reaches V1 long-poll clients as objects and the JS V2 long-poll client as arrays", async () => {
    const t = topic("v1-bcast");
    const v1a = await openRaw({ user_id: "v1a" });
    const v1b = await openRaw({ user_id: "v1b" });
    const v2 = await clients.open(server, { params: { user_id: "v2" } });
    await v1a.join(t);
    await v1b.join(t);
    const c = await join(v2, t, {}, { listen: ["shout"] });

    const payload = { s: 1, text: "to all serializers" };
    const result = await v1a.push(t, "shout", payload);
    assert.deepEqual(result.payload, { status: "ok", response: {} });
    for (const [name, raw] of [["v1a", v1a], ["v1b", v1b]]) {
      const got = await raw.waitFor((f) => f.event === "shout", `${name} receives the shout`);
      assert.deepEqual(got, { topic: t, event: "shout", payload, ref: null });
    }
    const got = await c.events.waitFor((e) => e.type === "shout", "v2 receives the shout");
    assert.deepEqual(got.payload, payload);
    await Promise.all([v1a.heartbeat(), v1b.heartbeat(), ping(v2)]);
    for (const [name, raw] of [["v1a", v1a], ["v1b", v1b]]) {
      assert.equal(raw.frames.count((f) => f.event === "shout"), 1, `${name} got exactly one shout`);
      assertRawV1Frames(raw);
    }
    assert.equal(c.events.count((e) => e.type === "shout"), 1, "v2 got exactly one shout");
    const v2Frame = v2.received.entries.map((f) => JSON.parse(f)).find((f) => Array.isArray(f) && f[3] === "shout");
    assert.deepEqual(v2Frame, [null, null, t, "shout", payload]);
  });

  test("raw V1 long-poll client: intercepted broadcast via handle_out and server push after join", async () => {
    const t = topic("v1-push");
    const raw = await openRaw({ user_id: "v1push" });
    await raw.join(t, { after_join: true });
    const welcome = await raw.waitFor((f) => f.event === "welcome", "welcome push (V1)");
    assert.deepEqual(welcome, { topic: t, event: "welcome", payload: { topic: t, user_id: "v1push" }, ref: null });
    const result = await raw.push(t, "say_censored", { body: "darn" });
    assert.equal(result.payload.status, "ok");
    const censored = await raw.waitFor((f) => f.event === "censored", "censored push (V1)");
    assert.deepEqual(censored.payload, { body: "****", seen_by: "v1push" });
    assert.equal(censored.ref, null, "V1 push has ref null");
    assertRawV1Frames(raw);
  });

  test("raw V1 long-poll client: heartbeat replies", async () => {
    const raw = await openRaw();
    const reply = await raw.heartbeat();
    assert.deepEqual(reply, { topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref: reply.ref });
    assertRawV1Frames(raw);
  });

  test("raw V1 long-poll client: channel crash -> phx_error, and the topic can be joined again", async () => {
    const raw = await openRaw();
    const t = topic("v1-crash");
    const joined = await raw.join(t);
    await raw.send({ topic: t, event: "crash", payload: {}, ref: raw.ref(), join_ref: joined.ref });
    const errored = await raw.waitFor((f) => f.topic === t && f.event === "phx_error", "phx_error (V1)");
    assert.deepEqual(errored, { topic: t, event: "phx_error", payload: { reason: "channel_crash" }, ref: joined.ref });
    await raw.join(t); // what the JS client does on phx_error: a new join
    const echo = await raw.push(t, "echo", { v1: "again" });
    assert.deepEqual(echo.payload, { status: "ok", response: { v1: "again" } });
    assertRawV1Frames(raw);
  });
}
