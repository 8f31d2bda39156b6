// V2 binary frames with the official phoenix JS client: ArrayBuffer push ->
// binary reply, binary broadcast, binary server push. Besides what the client
// decodes, the raw frames are checked byte for byte against the layouts of
// wire-protocol.md §4.2 (kind 0 push, kind 1 reply, kind 2 broadcast).
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  Clients,
  buffer,
  bytes,
  concatBytes,
  describeBytes,
  join,
  messagesFor,
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

test("binary push -> binary reply with the same bytes (all 256 byte values, non-ASCII topic)", async () => {
  const client = await clients.open(server);
  const t = topic("bïn-✓"); // byte lengths differ from character lengths
  const { channel } = await join(client, t);

  const result = await pushAsync(channel, "echo", buffer(ALL_BYTES));
  assert.equal(result.status, "ok");
  assert.ok(result.response instanceof ArrayBuffer, "the reply's response is an ArrayBuffer");
  assert.deepEqual(bytes(result.response), ALL_BYTES);

  // The client sent a kind-0 binary frame ...
  const sentFrame = client.sent.filter((f) => f instanceof ArrayBuffer).at(-1);
  assert.equal(new Uint8Array(sentFrame)[0], 0, "client push frame kind 0");
  // ... and the server answered with a kind-1 binary reply frame, byte for byte.
  await expectFrame(client, replyFrame(channel.joinRef(), result.ref, t, "ok", buffer(ALL_BYTES)), "binary reply frame");
  const reply = messagesFor(client, t, "phx_reply").find((m) => m.ref === result.ref);
  assert.equal(reply.join_ref, channel.joinRef());
});

test("empty binary payload -> empty binary reply", async () => {
  const client = await clients.open(server);
  const t = topic("bin-empty");
  const { channel } = await join(client, t);
  const result = await pushAsync(channel, "echo", new ArrayBuffer(0));
  assert.equal(result.status, "ok");
  assert.ok(result.response instanceof ArrayBuffer);
  assert.equal(result.response.byteLength, 0);
  await expectFrame(client, replyFrame(channel.joinRef(), result.ref, t, "ok", new ArrayBuffer(0)), "empty binary reply frame");
});

test("binary broadcast reaches every client as an ArrayBuffer (kind 2 frame)", async () => {
  const t = topic("bin-bcast");
  const members = [];
  for (const user of ["b1", "b2", "b3"]) {
    const client = await clients.open(server, { params: { user_id: user } });
    const { channel, events } = await join(client, t, {}, { listen: ["shout"] });
    members.push({ user, client, channel, events });
  }
  const payload = concatBytes("binary-shout", 0, 255, 128);
  const result = await pushAsync(members[0].channel, "shout", payload);
  assert.equal(result.status, "ok");
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

test("server binary push (self.push with bytes) arrives as an ArrayBuffer (kind 0 frame)", async () => {
  const client = await clients.open(server);
  const t = topic("bin-push");
  const { channel, events } = await join(client, t, {}, { listen: ["bin_push"] });
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
  const results = await Promise.all([
    pushAsync(channel, "echo", buffer([1, 2, 3])),
    pushAsync(channel, "echo", { json: true }),
    pushAsync(channel, "echo", buffer([4])),
    pushAsync(channel, "echo", { json: 2 }),
  ]);
  assert.deepEqual(bytes(results[0].response), [1, 2, 3]);
  assert.deepEqual(results[1].response, { json: true });
  assert.deepEqual(bytes(results[2].response), [4]);
  assert.deepEqual(results[3].response, { json: 2 });
  // JSON replies are text frames in the V2 array layout.
  const text = client.received.filter((f) => typeof f === "string").map((f) => JSON.parse(f));
  assert.ok(
    text.some((f) => f[1] === results[1].ref && f[3] === "phx_reply" && f[4].status === "ok" && f[4].response.json === true),
    "JSON reply is a text frame [join_ref, ref, topic, 'phx_reply', {...}]",
  );
});
