// Server restart: the server process is killed and a new one started on the
// same port; the official JS client reconnects and rejoins by itself. Runs its
// own server (it kills it), separate from the other files.
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { Clients, join, pushAsync, startServer, topic } from "./helpers.mjs";

const clients = new Clients();
const servers = [];

afterEach(() => clients.closeAll());
after(async () => {
  await clients.closeAll();
  await Promise.all(servers.map((s) => s.stop()));
});

test("after the server is killed and restarted on the same port, the client reconnects, rejoins and pushes again", async () => {
  const first = await startServer();
  servers.push(first);
  const client = await clients.open(first, { params: { user_id: "restart-user" } });
  const t = topic("restart");
  const { channel, events, join: joined } = await join(client, t, { after_join: true }, { listen: ["welcome"] });
  assert.equal(joined.status, "ok");
  const before = await pushAsync(channel, "echo", { phase: "before" });
  assert.deepEqual([before.status, before.response], ["ok", { phase: "before" }]);

  const exit = await first.kill("SIGKILL");
  assert.equal(exit.signal, "SIGKILL", "the first server process is gone");
  const closed = await client.log.waitFor((e) => e.type === "close", "client notices the lost connection");
  assert.notEqual(closed.code, undefined);
  await events.waitFor((e) => e.type === "error", "channel errored by the lost connection");

  const second = await startServer({ port: first.port });
  servers.push(second);
  assert.notEqual(second.pid, first.pid);

  await client.log.waitForCount((e) => e.type === "open", 2, "client reconnects to the new server", 15000);
  const joins = await events.waitForCount((e) => e.type === "join_ok", 2, "channel rejoins on the new server", 10000);
  assert.deepEqual(joins[1].payload, { topic: t, user_id: "restart-user", params: { after_join: true } });
  assert.notEqual(joins[1].joinRef, joins[0].joinRef);
  // The join params are sent again, so the new server pushes its welcome too.
  const welcomes = await events.waitForCount((e) => e.type === "welcome", 2, "welcome pushed again after the rejoin");
  assert.deepEqual(welcomes[1].payload, { topic: t, user_id: "restart-user" });

  const afterRestart = await pushAsync(channel, "echo", { phase: "after" });
  assert.deepEqual([afterRestart.status, afterRestart.response], ["ok", { phase: "after" }]);
  assert.equal(channel.state, "joined");
});
