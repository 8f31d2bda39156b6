// V2 binary frames with the official phoenix JS client: ArrayBuffer push ->
// binary reply, binary broadcast, binary server push. Besides what the client
// decodes, the raw frames are checked byte for byte against the layouts of
// wire-protocol.md §4.2 (kind 0 push, kind 1 reply, kind 2 broadcast).
//
// Over long polling (PHX_TRANSPORT=longpoll) only client -> server binary
// frames can travel (as base64 ndjson lines); the JS LongPoll JSON-decodes
// every message it receives, so the server sends no binary frame to it
// (long-poll.md §6, transports/longpoll.py): a binary reply becomes the error
// reply {"reason": "binary payloads cannot be sent over long polling"}, a
// binary broadcast skips long-poll subscribers, and a binary self.push raises
// EncodeError in the channel code (here: a crash -> phx_error -> rejoin). The
// bytes a binary push delivered are checked through the JSON "inspect" reply.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  Clients,
  buffer,
  bytes,
  concatBytes,
  describeBytes,
  join,
  LONGPOLL,
  messagesFor,
  ping,
  pushAsync,
  sameBytes,
  startServer,
  topic,
  utf8Length,
} from "./helpers.mjs";

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

const ALL_BYTES = Array.from({ length: 256 }, (_, i) => i);
const BINARY_OVER_LONGPOLL = { reason: "binary payloads cannot be sent over long polling" };

/** The text frames a client received, JSON-decoded. */
function textFrames(client) {
  return client.received.filter((f) => typeof f === "string").map((f) => JSON.parse(f));
}

/** Over long poll: what the server received for a binary push, via the JSON "inspect" reply. */
async function assertBytesArrived(channel, values) {
  const inspected = await pushAsync(channel, "inspect", buffer(values));
  assert.equal(inspected.status, "ok");
  assert.deepEqual(inspected.response, { binary: true, bytes: values }, "the server received these bytes as a binary frame");
}

function assertNoBinaryReceived(client) {
  assert.equal(client.received.count((f) => f instanceof ArrayBuffer), 0, "no binary frame reached the long-poll client");
  assert.ok(client.received.entries.every((f) => typeof f === "string"));
}

/** Server -> client reply frame (kind 1). */
function replyFrame(joinRef, ref, t, status, payload) {
  return concatBytes(1, utf8Length(joinRef), utf8Length(ref), utf8Length(t), utf8Length(status), joinRef, ref, t, status, payload);
}

/** Server -> client broadcast frame (kind 2). */
function broadcastFrame(t, event, payload) {
  return concatBytes(2, utf8Length(t), utf8Length(event), t, event, payload);
}

/** Server -> client push frame (kind 0, no ref). */
function pushFrame(joinRef, t, event, payload) {
  return concatBytes(0, utf8Length(joinRef), utf8Length(t), utf8Length(event), joinRef, t, event, payload);
}

async function expectFrame(client, expected, what) {
  return client.received.waitFor((f) => sameBytes(f, expected), `${what}: ${describeBytes(expected)}`);
}

const BINARY_REPLY = LONGPOLL
  ? "long poll: binary push (all 256 byte values, non-ASCII topic) reaches the server; its binary reply becomes an error reply"
  : "binary push -> binary reply with the same bytes (all 256 byte values, non-ASCII topic)";
test(BINARY_REPLY, async () => {
  const client = await clients.open(server);
  const t = topic("bïn-✓"); // byte lengths differ from character lengths
  const { channel } = await join(client, t);

  const result = await pushAsync(channel, "echo", buffer(ALL_BYTES));

  // The client sent a kind-0 binary frame ...
  const sentFrame = client.sent.filter((f) => f instanceof ArrayBuffer).at(-1);
  assert.equal(new Uint8Array(sentFrame)[0], 0, "client push frame kind 0");
  const reply = messagesFor(client, t, "phx_reply").find((m) => m.ref === result.ref);
  assert.equal(reply.join_ref, channel.joinRef());

  if (LONGPOLL) {
    // ... the server cannot answer with a binary frame: an error reply, as a text frame.
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, BINARY_OVER_LONGPOLL);
    const raw = textFrames(client).find((f) => f[1] === result.ref);
    assert.deepEqual(raw, [channel.joinRef(), result.ref, t, "phx_reply", { status: "error", response: BINARY_OVER_LONGPOLL }]);
    // The bytes themselves reached the server intact (all 256 values through base64).
    await assertBytesArrived(channel, ALL_BYTES);
    assertNoBinaryReceived(client);
    return;
  }
  assert.equal(result.status, "ok");
  assert.ok(result.response instanceof ArrayBuffer, "the reply's response is an ArrayBuffer");
  assert.deepEqual(bytes(result.response), ALL_BYTES);
  // ... and the server answered with a kind-1 binary reply frame, byte for byte.
  await expectFrame(client, replyFrame(channel.joinRef(), result.ref, t, "ok", buffer(ALL_BYTES)), "binary reply frame");
});

const EMPTY_BINARY = LONGPOLL
  ? "long poll: empty binary payload reaches the server; the reply is the binary error reply"
  : "empty binary payload -> empty binary reply";
test(EMPTY_BINARY, async () => {
  const client = await clients.open(server);
  const t = topic("bin-empty");
  const { channel } = await join(client, t);
  const result = await pushAsync(channel, "echo", new ArrayBuffer(0));
  if (LONGPOLL) {
    assert.equal(result.status, "error");
    assert.deepEqual(result.response, BINARY_OVER_LONGPOLL);
    await assertBytesArrived(channel, []);
    assertNoBinaryReceived(client);
    return;
  }
  assert.equal(result.status, "ok");
  assert.ok(result.response instanceof ArrayBuffer);
  assert.equal(result.response.byteLength, 0);
  await expectFrame(client, replyFrame(channel.joinRef(), result.ref, t, "ok", new ArrayBuffer(0)), "empty binary reply frame");
});

const BINARY_BROADCAST = LONGPOLL
  ? "long poll: a binary broadcast skips long-poll subscribers (a WebSocket subscriber gets it); JSON broadcasts still arrive"
  : "binary broadcast reaches every client as an ArrayBuffer (kind 2 frame)";
test(BINARY_BROADCAST, async () => {
  const t = topic("bin-bcast");
  const members = [];
  for (const user of ["b1", "b2", "b3"]) {
    const client = await clients.open(server, { params: { user_id: user } });
    const { channel, events } = await join(client, t, {}, { listen: ["shout"] });
    members.push({ user, client, channel, events });
  }
  // Over long poll, a WebSocket subscriber on the same topic shows the broadcast did happen.
  const wsMember = LONGPOLL ? await clients.open(server, { params: { user_id: "b-ws" }, via: "websocket" }) : null;
  const wsChan = wsMember ? await join(wsMember, t, {}, { listen: ["shout"] }) : null;
  const payload = concatBytes("binary-shout", 0, 255, 128);
  const result = await pushAsync(members[0].channel, "shout", payload);
  assert.equal(result.status, "ok");
  if (LONGPOLL) {
    const got = await wsChan.events.waitFor((e) => e.type === "shout", "the WebSocket subscriber receives the binary shout");
    assert.deepEqual(bytes(got.payload), bytes(payload));
    await expectFrame(wsMember, broadcastFrame(t, "shout", payload), "WebSocket subscriber: binary broadcast frame");
    // A JSON broadcast from the same sender after it reaches the long-poll
    // subscribers; broadcasts reach each subscriber in order, so the binary
    // one would have arrived before it.
    const next = await pushAsync(members[0].channel, "shout", { after: "binary" });
    assert.equal(next.status, "ok");
    for (const m of members) {
      const json = await m.events.waitFor((e) => e.type === "shout", `${m.user} receives the JSON shout`);
      assert.deepEqual(json.payload, { after: "binary" }, `${m.user}: the first shout it gets is the JSON one`);
      await ping(m.client);
      assert.equal(m.events.count((e) => e.type === "shout"), 1, `${m.user}: the binary broadcast was not delivered`);
      assertNoBinaryReceived(m.client);
    }
    const wsShouts = await wsChan.events.waitForCount((e) => e.type === "shout", 2, "the WebSocket subscriber gets both shouts");
    assert.deepEqual(wsShouts[1].payload, { after: "binary" });
    // The JSON reply to the binary push is an ordinary text frame.
    const replyFrame0 = textFrames(members[0].client).find((f) => f[1] === result.ref);
    assert.deepEqual(replyFrame0, [members[0].channel.joinRef(), result.ref, t, "phx_reply", { status: "ok", response: {} }]);
    return;
  }
  for (const m of members) {
    const got = await m.events.waitFor((e) => e.type === "shout", `${m.user} receives the binary shout`);
    assert.ok(got.payload instanceof ArrayBuffer, `${m.user}: payload is an ArrayBuffer`);
    assert.deepEqual(bytes(got.payload), bytes(payload));
    await expectFrame(m.client, broadcastFrame(t, "shout", payload), `${m.user}: binary broadcast frame`);
  }
  // The JSON reply to the binary push is an ordinary text frame.
  const replyText = members[0].client.received.filter((f) => typeof f === "string" && f.includes("phx_reply")).at(-1);
  assert.deepEqual(JSON.parse(replyText), [members[0].channel.joinRef(), result.ref, t, "phx_reply", { status: "ok", response: {} }]);
});

const BINARY_SERVER_PUSH = LONGPOLL
  ? "long poll: server binary push (self.push with bytes) raises in the channel: phx_error, rejoin, nothing delivered"
  : "server binary push (self.push with bytes) arrives as an ArrayBuffer (kind 0 frame)";
test(BINARY_SERVER_PUSH, async () => {
  const client = await clients.open(server);
  const t = topic("bin-push");
  const { channel, events } = await join(client, t, {}, { listen: ["bin_push"] });
  if (LONGPOLL) {
    // self.push(bytes) to a long-poll client raises EncodeError in handle_in:
    // the channel crashes (no reply), the client gets phx_error and rejoins.
    const crash = channel.push("push_binary", { repeat: 2 }, 2000);
    const errored = await events.waitFor((e) => e.type === "error", "phx_error after the binary push failed");
    assert.deepEqual(errored.payload, { reason: "channel_crash" });
    await events.waitForCount((e) => e.type === "join_ok", 2, "automatic rejoin");
    const echo = await pushAsync(channel, "echo", { after: "binary push" });
    assert.deepEqual([echo.status, echo.response], ["ok", { after: "binary push" }]);
    assert.equal(events.count((e) => e.type === "bin_push"), 0, "no bin_push was delivered");
    assert.equal(messagesFor(client, t, "phx_reply").filter((m) => m.ref === crash.ref).length, 0, "no reply to push_binary");
    assertNoBinaryReceived(client);
    return;
  }
  const result = await pushAsync(channel, "push_binary", { repeat: 2 });
  assert.equal(result.status, "ok");
  const got = await events.waitFor((e) => e.type === "bin_push", "binary push from the server");
  assert.ok(got.payload instanceof ArrayBuffer);
  assert.deepEqual(bytes(got.payload), [...ALL_BYTES, ...ALL_BYTES]);
  await expectFrame(client, pushFrame(channel.joinRef(), t, "bin_push", buffer([...ALL_BYTES, ...ALL_BYTES])), "binary push frame");
});

test("binary and JSON messages interleave on one channel", async () => {
  const client = await clients.open(server);
  const t = topic("bin-mixed");
  const { channel } = await join(client, t);
  // Over long poll these go out as one ndjson POST mixing base64 and JSON lines;
  // "inspect" reports what the server received for each.
  const binaryEvent = LONGPOLL ? "inspect" : "echo";
  const results = await Promise.all([
    pushAsync(channel, binaryEvent, buffer([1, 2, 3])),
    pushAsync(channel, "echo", { json: true }),
    pushAsync(channel, binaryEvent, buffer([4])),
    pushAsync(channel, "echo", { json: 2 }),
  ]);
  if (LONGPOLL) {
    assert.deepEqual(results.map((r) => r.status), ["ok", "ok", "ok", "ok"]);
    assert.deepEqual(results[0].response, { binary: true, bytes: [1, 2, 3] });
    assert.deepEqual(results[2].response, { binary: true, bytes: [4] });
    assertNoBinaryReceived(client);
  } else {
    assert.deepEqual(bytes(results[0].response), [1, 2, 3]);
    assert.deepEqual(bytes(results[2].response), [4]);
  }
  assert.deepEqual(results[1].response, { json: true });
  assert.deepEqual(results[3].response, { json: 2 });
  // JSON replies are text frames in the V2 array layout.
  const text = client.received.filter((f) => typeof f === "string").map((f) => JSON.parse(f));
  assert.ok(
    text.some((f) => f[1] === results[1].ref && f[3] === "phx_reply" && f[4].status === "ok" && f[4].response.json === true),
    "JSON reply is a text frame [join_ref, ref, topic, 'phx_reply', {...}]",
  );
});
