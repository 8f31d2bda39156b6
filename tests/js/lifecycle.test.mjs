// Connection and channel lifecycle with the official phoenix JS client:
// heartbeat, refused connect, channel crash -> phx_error -> automatic rejoin,
// stop(normal) -> phx_close (no rejoin), stop(boom) -> phx_error, and
// disconnect-by-socket-id (close 1001, then reconnect).
//
// Over long polling (PHX_TRANSPORT=longpoll) the JS client sends no
// heartbeats (LongPoll.skipHeartbeat; socket.ping still works), a refused
// connect is a {"status": 403} poll (close 1008 "forbidden"), and a session
// the server ended reaches the client as a 410 poll (close 3410 "session_gone").
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Clients, join, LONGPOLL, messagesFor, ping, pushAsync, rawPush, startServer, topic } from "./helpers.mjs";

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

const isMsg = (t, event) => (e) => e.type === "message" && e.topic === t && e.event === event;

describe("heartbeat", () => {
  const HEARTBEAT = LONGPOLL
    ? "long poll: no heartbeats are sent (even with a 100 ms interval), socket.ping works, the connection stays up"
    : "with a 100 ms heartbeat the client gets prompt replies and stays connected";
  test(HEARTBEAT, async () => {
    if (LONGPOLL) await longPollWithoutHeartbeats();
    else await webSocketHeartbeats();
  });

  async function longPollWithoutHeartbeats() {
    const client = await clients.open(server, { heartbeatIntervalMs: 100 });
    assert.equal(client.socket.conn.skipHeartbeat, true, "LongPoll asks the socket to skip heartbeats");
    const t = topic("hb-lp");
    const { channel } = await join(client, t);

    // 35 heartbeat intervals pass without a heartbeat. That is also longer than
    // the server's inactivity limit (1.5 x the 2 s poll window of server_app):
    // the poll loop alone keeps the session alive.
    await new Promise((r) => setTimeout(r, 3500));
    const isHeartbeat = (f) => typeof f === "string" && f.includes('"phoenix","heartbeat"');
    assert.equal(client.sent.count(isHeartbeat), 0, "no heartbeat frame was sent");
    assert.equal(client.log.count((e) => e.type === "close" || e.type === "error"), 0, "no close/error");
    assert.equal(client.log.count((e) => e.type === "open"), 1, "still the first connection");

    // socket.ping sends one heartbeat and gets its reply.
    const rtt = await ping(client);
    assert.ok(typeof rtt === "number" && rtt >= 0, `rtt ${rtt}`);
    const sentHeartbeats = client.sent.filter(isHeartbeat).map((f) => JSON.parse(f));
    assert.equal(sentHeartbeats.length, 1, "exactly the ping's heartbeat was sent");
    const replies = messagesFor(client, "phoenix", "phx_reply");
    assert.equal(replies.length, 1, "one heartbeat reply: the ping's");
    const [reply] = replies;
    assert.deepEqual(reply.payload, { status: "ok", response: {} });
    assert.equal(reply.ref, sentHeartbeats[0][1]);
    assert.equal(reply.join_ref, null, "heartbeat reply has join_ref null");
    assert.ok(client.socket.isConnected());

    const echo = await pushAsync(channel, "echo", { alive: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { alive: true }]);
  }

  async function webSocketHeartbeats() {
    const client = await clients.open(server, { heartbeatIntervalMs: 100 });
    const t = topic("hb");
    const { channel } = await join(client, t);

    const replies = await client.log.waitForCount(isMsg("phoenix", "phx_reply"), 5, "5 heartbeat replies on topic phoenix");
    const heartbeatRefs = client.sent
      .filter((f) => typeof f === "string")
      .map((f) => JSON.parse(f))
      .filter((f) => f[2] === "phoenix" && f[3] === "heartbeat")
      .map((f) => f[1]);
    for (const r of replies) {
      assert.deepEqual(r.payload, { status: "ok", response: {} });
      assert.equal(r.join_ref, null, "heartbeat reply has join_ref null");
      assert.ok(heartbeatRefs.includes(r.ref), `reply ref ${r.ref} answers a heartbeat the client sent`);
    }
    // A missed reply would make the client close with "heartbeat timeout" (code 1000) and reconnect.
    assert.equal(client.log.count((e) => e.type === "close" || e.type === "error"), 0, "no close/error while heartbeating");
    assert.equal(client.log.count((e) => e.type === "open"), 1, "still the first connection");
    assert.ok(client.socket.isConnected());

    const rtt = await ping(client);
    assert.equal(typeof rtt, "number");
    assert.ok(rtt >= 0, `rtt ${rtt}`);

    const echo = await pushAsync(channel, "echo", { alive: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { alive: true }]);
  }

  test("a heartbeat needs no joined channel, and other events on 'phoenix' are unmatched", async () => {
    const client = await clients.open(server);
    const rtt = await ping(client);
    assert.ok(rtt >= 0);
    const other = await rawPush(client, { topic: "phoenix", event: "other_event", payload: {} });
    assert.deepEqual(other.payload, { status: "error", response: { reason: "unmatched topic" } });
    assert.equal(other.join_ref, null);
  });
});

describe("connect", () => {
  test("a connect refused by UserSocket.connect (token=reject) never opens; onError fires", async () => {
    const client = clients.create(server, { params: { token: "reject" } });
    client.socket.connect();
    // The client retries (reconnectAfterMs 50 ms); each attempt fails.
    const errors = await client.log.waitForCount((e) => e.type === "error", 2, "two failed connection attempts");
    assert.match(errors[0].message, /403/, "the handshake was refused with HTTP 403 (long poll: a {status: 403} body)");
    if (LONGPOLL) {
      const closed = await client.log.waitFor((e) => e.type === "close", "LongPoll closes after the 403");
      assert.deepEqual([closed.code, closed.reason], [1008, "forbidden"]);
    }
    assert.equal(client.log.count((e) => e.type === "open"), 0, "the socket never opened");
    assert.equal(client.socket.isConnected(), false);
    client.socket.disconnect();
  });

  test("connect params reach connect() and the channel's assigns", async () => {
    const client = await clients.open(server, { params: { user_id: "param-user" } });
    const { join: result } = await join(client, topic("params"));
    assert.equal(result.response.user_id, "param-user");
  });
});

describe("channel crash", () => {
  test("an exception in handle_in -> phx_error -> the client rejoins automatically and the channel works", async () => {
    const client = await clients.open(server);
    const t = topic("crash");
    const { channel, events, join: first } = await join(client, t, {}, { listen: [] });
    const firstJoinRef = first.joinRef;

    const crash = channel.push("crash", {}, 2000);
    const errored = await events.waitFor((e) => e.type === "error", "channel onError after the crash");
    assert.deepEqual(errored.payload, { reason: "channel_crash" });

    const frame = messagesFor(client, t, "phx_error")[0];
    assert.equal(frame.join_ref, firstJoinRef, "phx_error carries the join_ref");
    assert.equal(frame.ref, firstJoinRef, "phx_error's ref is the join_ref");
    assert.deepEqual(frame.payload, { reason: "channel_crash" });

    const rejoined = await events.waitForCount((e) => e.type === "join_ok", 2, "automatic rejoin after phx_error");
    assert.notEqual(rejoined[1].joinRef, firstJoinRef, "rejoin uses a new join_ref");
    assert.deepEqual(
      events.entries.filter((e) => ["join_ok", "error", "close"].includes(e.type)).map((e) => e.type),
      ["join_ok", "error", "join_ok"],
    );
    assert.equal(channel.state, "joined");

    const echo = await pushAsync(channel, "echo", { after: "crash" });
    assert.deepEqual([echo.status, echo.response], ["ok", { after: "crash" }]);
    assert.equal(
      messagesFor(client, t, "phx_reply").filter((m) => m.ref === crash.ref).length,
      0,
      "no reply for the push that crashed the channel",
    );
    assert.equal(client.log.count((e) => e.type === "close"), 0, "the connection stayed up");
  });

  test("the crash of one channel does not affect another channel on the same socket", async () => {
    const client = await clients.open(server);
    const a = await join(client, topic("crash-a"));
    const b = await join(client, topic("crash-b"));
    a.channel.push("crash", {}, 2000);
    await a.events.waitFor((e) => e.type === "error", "channel a errors");
    const echo = await pushAsync(b.channel, "echo", { b: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { b: true }]);
    assert.equal(b.events.count((e) => e.type === "error" || e.type === "close"), 0);
    await a.events.waitForCount((e) => e.type === "join_ok", 2, "channel a rejoins");
  });

  test("stop('boom') (non-graceful) -> phx_error -> rejoin", async () => {
    const client = await clients.open(server);
    const t = topic("stop-boom");
    const { channel, events } = await join(client, t);
    channel.push("stop_boom", {}, 2000);
    const errored = await events.waitFor((e) => e.type === "error", "phx_error after stop('boom')");
    assert.deepEqual(errored.payload, { reason: "channel_crash" });
    await events.waitForCount((e) => e.type === "join_ok", 2, "automatic rejoin");
    assert.equal(events.count((e) => e.type === "close"), 0, "no phx_close for a non-graceful stop");
    const echo = await pushAsync(channel, "echo", { again: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { again: true }]);
  });
});

describe("graceful stop", () => {
  test("stop('normal') -> phx_close: the channel is closed and not rejoined", async () => {
    const client = await clients.open(server);
    const t = topic("stop-normal");
    const { channel, events, join: first } = await join(client, t);
    channel.push("stop_normal", {}, 2000);
    const closed = await events.waitFor((e) => e.type === "close", "channel onClose after stop('normal')");
    assert.deepEqual(closed.payload, {});
    const frame = messagesFor(client, t, "phx_close")[0];
    assert.equal(frame.join_ref, first.joinRef);
    assert.equal(frame.ref, first.joinRef, "phx_close's ref is the join_ref");
    assert.deepEqual(frame.payload, {});
    assert.equal(channel.state, "closed");
    assert.ok(!client.socket.channels.includes(channel));

    await ping(client);
    assert.equal(events.count((e) => e.type === "error"), 0, "no phx_error for a graceful stop");
    const joinsSent = client.sent.filter((f) => typeof f === "string" && f.includes(`"${t}","phx_join"`));
    assert.equal(joinsSent.length, 1, "no rejoin was sent");
    const unmatched = await rawPush(client, { topic: t, event: "echo", join_ref: first.joinRef });
    assert.deepEqual(unmatched.payload, { status: "error", response: { reason: "unmatched topic" } });
  });

  test("stop('normal', reply) -> the reply arrives first, then phx_close", async () => {
    const client = await clients.open(server);
    const t = topic("stop-reply");
    const { channel, events } = await join(client, t);
    const result = await pushAsync(channel, "stop_with_reply", {});
    assert.deepEqual([result.status, result.response], ["ok", { bye: true }]);
    await events.waitFor((e) => e.type === "close", "phx_close after the reply");
    const msgs = messagesFor(client, t);
    const replyIdx = msgs.findIndex((m) => m.event === "phx_reply" && m.ref === result.ref);
    const closeIdx = msgs.findIndex((m) => m.event === "phx_close");
    assert.ok(replyIdx >= 0 && closeIdx > replyIdx, `reply (${replyIdx}) before phx_close (${closeIdx})`);
    assert.equal(events.count((e) => e.type === "error"), 0);
  });
});

describe("disconnect by socket id", () => {
  test("Endpoint.broadcast(id, 'disconnect') closes every socket with that id (1001; long poll: 3410 session_gone); they reconnect and rejoin", async () => {
    const userId = `dc-${process.pid}-${Date.now()}`;
    const a1 = await clients.open(server, { params: { user_id: userId } });
    const a2 = await clients.open(server, { params: { user_id: userId } });
    const bystander = await clients.open(server, { params: { user_id: `${userId}-other` } });
    const t = topic("disconnect");
    const { channel, events } = await join(a1, t);

    channel.push("disconnect_me", {}, 1000);
    for (const [name, c] of [["a1", a1], ["a2", a2]]) {
      const closed = await c.log.waitFor((e) => e.type === "close", `${name} is closed by the server`);
      if (LONGPOLL) {
        // The session ended; the next poll finds no session (410) and LongPoll
        // reports an error (410) then closes with 3410 "session_gone".
        assert.deepEqual([closed.code, closed.reason], [3410, "session_gone"], `${name} close`);
        const errors = c.log.filter((e) => e.type === "error");
        assert.deepEqual(errors.map((e) => e.message), ["410"], `${name} error before the close`);
      } else {
        assert.equal(closed.code, 1001, `${name} close code`);
      }
    }

    // The JS client reconnects by itself, and the channel rejoins.
    await a1.log.waitForCount((e) => e.type === "open", 2, "a1 reconnects");
    await a2.log.waitForCount((e) => e.type === "open", 2, "a2 reconnects");
    const joins = await events.waitForCount((e) => e.type === "join_ok", 2, "channel rejoins after reconnect");
    assert.notEqual(joins[1].joinRef, joins[0].joinRef);
    const echo = await pushAsync(channel, "echo", { back: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { back: true }]);

    // A socket with another id is untouched.
    await ping(bystander);
    assert.equal(bystander.log.count((e) => e.type === "close"), 0, "socket with another id not closed");
    assert.equal(bystander.log.count((e) => e.type === "open"), 1);
  });
});
