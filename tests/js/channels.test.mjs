// Channel basics with the official phoenix JS client: join ok/error, replies,
// client-side push timeout, server pushes (after_join, send_after), async
// replies through socket_ref, and leave.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Clients, join, messagesFor, ping, pushAsync, rawPush, startServer, topic, WAIT_MS, withTimeout } from "./helpers.mjs";

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

describe("join", () => {
  test("join ok returns the channel's join reply payload", async () => {
    const client = await clients.open(server, { params: { user_id: "alice" } });
    const t = topic("join-ok");
    const { channel, join: result } = await join(client, t, { hello: "world", n: 1 });

    assert.equal(result.status, "ok");
    assert.deepEqual(result.response, { topic: t, user_id: "alice", params: { hello: "world", n: 1 } });
    assert.equal(channel.state, "joined");

    // The reply on the wire echoes the join's ref and join_ref (equal for a join).
    const [reply] = messagesFor(client, t, "phx_reply");
    assert.ok(reply, "a phx_reply for the join was received");
    assert.equal(reply.ref, channel.joinRef());
    assert.equal(reply.join_ref, channel.joinRef());
    assert.deepEqual(reply.payload, {
      status: "ok",
      response: { topic: t, user_id: "alice", params: { hello: "world", n: 1 } },
    });
  });

  test("join refused with JoinError gives status error with the response, and is retried", async () => {
    const client = await clients.open(server);
    const { channel, events, join: result } = await join(client, "room:private", {});
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, { reason: "unauthorized" });

    // The wire reply echoes ref/join_ref of the refused join.
    const reply = messagesFor(client, "room:private", "phx_reply")[0];
    assert.equal(reply.ref, result.joinRef);
    assert.equal(reply.join_ref, result.joinRef);
    assert.deepEqual(reply.payload, { status: "error", response: { reason: "unauthorized" } });

    // The JS client retries a refused join (rejoinAfterMs); the server refuses again.
    const refusals = await events.waitForCount((e) => e.type === "join_error", 2, "second refusal after the client's retry");
    assert.deepEqual(refusals[1].payload, { reason: "unauthorized" });
    assert.notEqual(refusals[1].joinRef, refusals[0].joinRef, "a retry uses a new join_ref");
    assert.equal(events.count((e) => e.type === "join_ok"), 0);
    channel.leave();

    // A refused join creates no channel: pushing to it gets "unmatched topic".
    const unmatched = await rawPush(client, { topic: "room:private", event: "echo", join_ref: result.joinRef });
    assert.deepEqual(unmatched.payload, { status: "error", response: { reason: "unmatched topic" } });
    assert.equal(unmatched.join_ref, null);
  });

  test("join refused by a join param (deny) on an ordinary room", async () => {
    const client = await clients.open(server);
    const { channel, join: result } = await join(client, topic("deny"), { deny: true });
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, { reason: "unauthorized" });
    assert.notEqual(channel.state, "joined");
    channel.leave();
  });

  test("join of a topic without a route gets 'unmatched topic' with join_ref null", async () => {
    const client = await clients.open(server);
    const { channel, join: result } = await join(client, "nochannel:x", {});
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, { reason: "unmatched topic" });
    const reply = messagesFor(client, "nochannel:x", "phx_reply")[0];
    assert.equal(reply.ref, result.joinRef);
    assert.equal(reply.join_ref, null);
    channel.leave();
  });

  test("join that raises gets 'join crashed'", async () => {
    const client = await clients.open(server);
    const { channel, join: result } = await join(client, topic("join-crash"), { crash_join: true });
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, { reason: "join crashed" });
    channel.leave();
    // The connection survives a crashing join.
    assert.equal(typeof (await ping(client)), "number");
  });
});

describe("push and replies", () => {
  test("push with ok reply echoes the payload (nested JSON, unicode)", async () => {
    const client = await clients.open(server);
    const t = topic("echo");
    const { channel } = await join(client, t);
    const payload = {
      hello: "world",
      n: 1.5,
      int: -7,
      list: [1, "x", null, true, false],
      nested: { k: "v", deeper: { a: [] } },
      unicode: "héllo ✓ 日本 🎉",
    };
    const result = await pushAsync(channel, "echo", payload);
    assert.equal(result.status, "ok");
    assert.deepEqual(result.response, payload);

    const reply = messagesFor(client, t, "phx_reply").find((m) => m.ref === result.ref);
    assert.ok(reply, "reply with the push's ref");
    assert.equal(reply.join_ref, channel.joinRef(), "reply carries the channel's join_ref");
  });

  test("push with error reply", async () => {
    const client = await clients.open(server);
    const { channel } = await join(client, topic("error-reply"));
    const result = await pushAsync(channel, "error_reply", { why: "nope" });
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, { why: "nope" });
  });

  test("bare ok reply has response {}", async () => {
    const client = await clients.open(server);
    const t = topic("bare");
    const { channel } = await join(client, t);
    const result = await pushAsync(channel, "ok_bare", { ignored: true });
    assert.equal(result.status, "ok");
    assert.deepEqual(result.response, {});
    const reply = messagesFor(client, t, "phx_reply").find((m) => m.ref === result.ref);
    assert.deepEqual(reply.payload, { status: "ok", response: {} });
  });

  test("push without a reply times out on the client", async () => {
    const client = await clients.open(server);
    const t = topic("noreply");
    const { channel } = await join(client, t);
    const result = await pushAsync(channel, "noreply", { x: 1 }, { timeout: 300 });
    assert.equal(result.status, "timeout");
    // Replies of one channel are in program order: once a later echo is
    // answered, a reply to "noreply" would already have arrived.
    const echo = await pushAsync(channel, "echo", { after: "noreply" });
    assert.equal(echo.status, "ok");
    assert.deepEqual(echo.response, { after: "noreply" });
    assert.equal(
      messagesFor(client, t, "phx_reply").filter((m) => m.ref === result.ref).length,
      0,
      "the server sent no reply to the noreply push",
    );
    assert.equal(channel.state, "joined");
  });

  test("many pushes in a row each get their own reply, in order", async () => {
    const client = await clients.open(server);
    const t = topic("many");
    const { channel } = await join(client, t);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => pushAsync(channel, "echo", { i })));
    assert.deepEqual(
      results.map((r) => [r.status, r.response.i]),
      Array.from({ length: 50 }, (_, i) => ["ok", i]),
    );
    const replyRefs = messagesFor(client, t, "phx_reply")
      .slice(1)
      .map((m) => m.ref);
    assert.deepEqual(replyRefs, results.map((r) => r.ref), "replies arrive in push order");
  });
});

describe("server pushes", () => {
  test("after_join: self.send in join -> handle_info -> push arrives after the join reply", async () => {
    const client = await clients.open(server, { params: { user_id: "bob" } });
    const t = topic("after-join");
    const { channel, events } = await join(client, t, { after_join: true }, { listen: ["welcome"] });
    const welcome = await events.waitFor((e) => e.type === "welcome", "welcome push after join");
    assert.deepEqual(welcome.payload, { topic: t, user_id: "bob" });
    const types = events.entries.map((e) => e.type);
    assert.ok(types.indexOf("join_ok") < types.indexOf("welcome"), `join reply before push, got ${types}`);

    const [frame] = messagesFor(client, t, "welcome");
    assert.equal(frame.join_ref, channel.joinRef(), "a channel push carries the join_ref");
    assert.equal(frame.ref, null, "a push has ref null");
    assert.equal(events.count((e) => e.type === "welcome"), 1);
  });

  test("send_after -> handle_info -> push", async () => {
    const client = await clients.open(server);
    const t = topic("later");
    const { channel, events } = await join(client, t, {}, { listen: ["later"] });
    const result = await pushAsync(channel, "later", { seconds: 0.05, x: 1 });
    assert.equal(result.status, "ok");
    assert.deepEqual(result.response, { scheduled: true });
    const later = await events.waitFor((e) => e.type === "later", "'later' push from send_after");
    assert.deepEqual(later.payload, { later: true, payload: { seconds: 0.05, x: 1 } });
    const frame = messagesFor(client, t, "later")[0];
    assert.equal(frame.join_ref, channel.joinRef());
    assert.equal(frame.ref, null);
  });
});

describe("async reply via socket_ref", () => {
  test("a held ref is answered later, after other messages were handled", async () => {
    const client = await clients.open(server);
    const t = topic("async");
    const { channel } = await join(client, t);

    let released = false;
    const held = channel.push("async_hold", { q: 1 });
    const heldOutcome = withTimeout(new Promise((resolve) => {
      held.receive("ok", (response) => resolve({ status: "ok", response, releasedBefore: released }));
      held.receive("error", (response) => resolve({ status: "error", response, releasedBefore: released }));
      held.receive("timeout", () => resolve({ status: "timeout", releasedBefore: released }));
    }), WAIT_MS + 1000, "outcome of the held async_hold push");

    // The channel is not blocked by the pending reply.
    const echo = await pushAsync(channel, "echo", { meanwhile: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { meanwhile: true }]);

    released = true;
    const release = await pushAsync(channel, "async_release", { token: "r1" });
    assert.deepEqual([release.status, release.response], ["ok", { released: true }]);

    const result = await heldOutcome;
    assert.equal(result.status, "ok", `held push outcome: ${JSON.stringify(result)}`);
    assert.equal(result.releasedBefore, true, "the async reply came only after the release");
    assert.deepEqual(result.response, { async: true, released_with: { token: "r1" } });

    const frame = messagesFor(client, t, "phx_reply").find((m) => m.ref === held.ref);
    assert.equal(frame.join_ref, channel.joinRef(), "async reply carries the join_ref");
  });
});

describe("leave", () => {
  test("leave gets ok, then phx_close; the channel is gone on the server", async () => {
    const client = await clients.open(server);
    const t = topic("leave");
    const { channel, events } = await join(client, t);
    const joinRef = channel.joinRef();

    const leave = channel.leave();
    const left = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("leave got no ok reply")), WAIT_MS);
      leave.receive("ok", (response) => {
        clearTimeout(timer);
        resolve(response);
      });
    });
    assert.deepEqual(left, {});
    assert.equal(channel.state, "closed");
    assert.ok(!client.socket.channels.includes(channel), "channel removed from the socket");
    assert.equal(events.count((e) => e.type === "close"), 1);

    // On the wire: phx_reply ok {} to the leave, then phx_close (ref = join_ref = the join's).
    const close = await client.log.waitFor(
      (e) => e.type === "message" && e.topic === t && e.event === "phx_close",
      "phx_close after leave",
    );
    assert.equal(close.join_ref, joinRef);
    assert.equal(close.ref, joinRef);
    assert.deepEqual(close.payload, {});
    const msgs = messagesFor(client, t);
    const leaveReplyIdx = msgs.findIndex((m) => m.event === "phx_reply" && m.ref === leave.ref);
    assert.ok(leaveReplyIdx >= 0, "leave reply received");
    assert.deepEqual(msgs[leaveReplyIdx].payload, { status: "ok", response: {} });
    assert.ok(leaveReplyIdx < msgs.indexOf(close), "leave reply before phx_close");

    // A push on the left channel object is not sent by the client; it times out.
    const after = await pushAsync(channel, "echo", { after: "leave" }, { timeout: 200 });
    assert.equal(after.status, "timeout");
    assert.equal(
      client.sent.count((f) => typeof f === "string" && f.includes('"after":"leave"')),
      0,
      "push after leave not sent",
    );

    // A push to that topic sent anyway (old join_ref) is not delivered: the server answers "unmatched topic".
    const unmatched = await rawPush(client, { topic: t, event: "echo", payload: { stale: true }, join_ref: joinRef });
    assert.deepEqual(unmatched.payload, { status: "error", response: { reason: "unmatched topic" } });
    assert.equal(unmatched.join_ref, null);
    assert.equal(messagesFor(client, t, "echo").length, 0);
  });

  test("leave of a topic that was never joined gets ok and no phx_close", async () => {
    const client = await clients.open(server);
    const t = topic("never-joined");
    const reply = await rawPush(client, { topic: t, event: "phx_leave", payload: {} });
    assert.deepEqual(reply.payload, { status: "ok", response: {} });
    await ping(client);
    assert.equal(messagesFor(client, t, "phx_close").length, 0);
  });

  test("a second channel object for the same topic replaces the first (leave + phx_close for the old join)", async () => {
    const client = await clients.open(server);
    const t = topic("dup");
    const first = await join(client, t, { which: 1 });
    const oldJoinRef = first.channel.joinRef();
    const second = await join(client, t, { which: 2 });
    assert.equal(second.join.status, "ok");
    assert.deepEqual(second.join.response.params, { which: 2 });
    assert.notEqual(second.channel.joinRef(), oldJoinRef);

    // The client left the old join first; the server closed it with phx_close (old join_ref).
    const close = await client.log.waitFor(
      (e) => e.type === "message" && e.topic === t && e.event === "phx_close" && e.join_ref === oldJoinRef,
      "phx_close for the first join",
    );
    assert.equal(close.ref, oldJoinRef);
    assert.equal(first.channel.state, "closed");

    const echo = await pushAsync(second.channel, "echo", { via: "second" });
    assert.deepEqual([echo.status, echo.response], ["ok", { via: "second" }]);
    const reply = messagesFor(client, t, "phx_reply").find((m) => m.ref === echo.ref);
    assert.equal(reply.join_ref, second.channel.joinRef());
  });

  test("the topic can be joined again after leaving", async () => {
    const client = await clients.open(server);
    const t = topic("rejoin-after-leave");
    const first = await join(client, t);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("leave got no ok reply")), WAIT_MS);
      first.channel.leave().receive("ok", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const second = await join(client, t, { again: true });
    assert.equal(second.join.status, "ok");
    assert.deepEqual(second.join.response.params, { again: true });
    const echo = await pushAsync(second.channel, "echo", { second: true });
    assert.deepEqual([echo.status, echo.response], ["ok", { second: true }]);
  });
});
