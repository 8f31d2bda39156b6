// A cluster of real server processes sharing Redis (then NATS), with the
// official phoenix client on every node: cross-node broadcasts exactly once,
// broadcast_from, endpoint.broadcast from a plain script, disconnect by socket
// id, direct broadcasts; one node killed (its clients rejoin a survivor); the
// engine restarted under the nodes (they survive and broadcasts resume).
//
// Nodes run tests/cluster/app.py. The run's Redis/NATS (PHX_TEST_REDIS_URL and
// PHX_TEST_NATS_URL, private instances started by `make test`) carry the first part, with a channel prefix of this run
// only; the restart tests start their own redis-server/nats-server on a free
// port and kill it by PID. Without a service the tests are skipped with the
// reason, except in CI (CI=true), where that is a failure.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {
  Clients,
  freePort,
  join,
  ping,
  PYTHON,
  pushAsync,
  REPO_ROOT,
  startServer,
  topic,
  withTimeout,
  WAIT_MS,
} from "./helpers.mjs";

const IN_CI = process.env.CI === "true";
const APP = "tests.cluster.app:endpoint";
// The run's private services (tests/services.py, started by `make test`).
const engineSpec = (url, binary) => ({ url, port: Number(new URL(url).port), binary });
const ENGINES = {
  redis: engineSpec(process.env.PHX_TEST_REDIS_URL || "redis://127.0.0.1:6379/0", "/usr/bin/redis-server"),
  nats: engineSpec(process.env.PHX_TEST_NATS_URL || "nats://127.0.0.1:4222", "/usr/sbin/nats-server"),
};
const RUN = `js${process.pid}-${Date.now().toString(36)}`;
let prefixes = 0;
const prefix = () => `${RUN}-${++prefixes}`;

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
    sock.setTimeout(1000, () => done(false));
  });
}

/** Runs `body` as a describe block, or explains why it cannot run (a failure in CI). */
async function suite(name, missing, body) {
  if (!missing) return describe(name, body);
  if (IN_CI) return test(name, () => assert.fail(`cannot run in CI: ${missing}`));
  return describe(name, { skip: missing }, () => test("needs the service", () => {}));
}

const sharedUp = {};
const binaryThere = {};
for (const [engine, spec] of Object.entries(ENGINES)) {
  sharedUp[engine] = await canConnect(spec.port);
  binaryThere[engine] = fs.existsSync(spec.binary);
}

/** Polls `condition` (async) every `every` ms until truthy; fails with `what` after `ms`. */
async function eventually(condition, what, ms = 15000, every = 200) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Runs a Python module to completion (bounded), resolving with its exit code and output. */
function runPython(args, env) {
  return withTimeout(
    new Promise((resolve) => {
      const proc = spawn(PYTHON, args, {
        cwd: REPO_ROOT,
        env: { ...process.env, PYTHONPATH: path.join(REPO_ROOT, "src"), ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      proc.stdout.on("data", (d) => (output += d));
      proc.stderr.on("data", (d) => (output += d));
      proc.once("exit", (code) => resolve({ code, output }));
    }),
    20000,
    `python ${args.join(" ")}`,
  );
}

/** Opens a client on `node`, joins `t` listening for `listen`; the join must succeed. */
async function member(clients, node, t, { params = {}, listen = ["shout", "announcement"] } = {}) {
  const client = await clients.open(node, { params });
  const joined = await join(client, t, {}, { listen });
  assert.equal(joined.join.status, "ok", `join of ${t} on port ${node.port}`);
  return { client, ...joined, node: joined.join.response.node, pid: joined.join.response.pid };
}

/** After `marker` arrives at every member, how many `match` events did each get before it? */
async function countsBeforeMarker(members, match, marker) {
  const counts = [];
  for (const m of members) {
    await m.events.waitFor(marker, `the marker reaches the client on node ${m.node}`);
    const markerIndex = m.events.entries.findIndex(marker);
    counts.push(m.events.entries.slice(0, markerIndex).filter(match).length);
  }
  return counts;
}

const isShout = (n) => (e) => e.type === "shout" && e.payload.n === n;
const isMarker = (e) => e.type === "shout" && e.payload.marker === true;

for (const [engine, spec] of Object.entries(ENGINES)) {
  await suite(
    `three nodes over ${engine}`,
    !sharedUp[engine] && `${engine} is not running at ${spec.url} (make test starts a private one)`,
    () => {
      const clients = new Clients();
      let nodes = [];
      let env;

      before(async () => {
        env = { PHX_CLUSTER_ENGINE: engine, PHX_CLUSTER_URL: spec.url, PHX_CLUSTER_PREFIX: prefix() };
        nodes = await Promise.all([0, 1, 2].map(() => startServer({ app: APP, env })));
      });
      afterEach(() => clients.closeAll());
      after(async () => {
        await clients.closeAll();
        await Promise.all(nodes.map((n) => n.stop()));
      });

      /** Two clients on each of the three nodes, all joined to `t`. */
      async function everyone(t) {
        const members = [];
        for (const node of nodes) {
          for (let i = 0; i < 2; i++) members.push(await member(clients, node, t));
        }
        assert.equal(new Set(members.map((m) => m.node)).size, 3, "three distinct node names");
        return members;
      }

      test("a broadcast from a channel on node A reaches every client on A, B and C exactly once", async () => {
        const t = topic("cluster");
        const members = await everyone(t);
        const sender = members[0];
        assert.equal((await pushAsync(sender.channel, "shout", { n: 1, body: "hello ✓" })).status, "ok");
        assert.equal((await pushAsync(sender.channel, "shout", { marker: true })).status, "ok");
        assert.deepEqual(await countsBeforeMarker(members, isShout(1), isMarker), [1, 1, 1, 1, 1, 1]);
        for (const m of members) {
          const got = m.events.entries.find(isShout(1));
          assert.deepEqual(got.payload, { n: 1, body: "hello ✓", via: { node: sender.node, pid: sender.pid } });
        }
      });

      test("broadcast_from skips only the sending client, on its node and everywhere else", async () => {
        const t = topic("cluster-from");
        const members = await everyone(t);
        const sender = members[0];
        assert.equal((await pushAsync(sender.channel, "shout_from", { n: 2 })).status, "ok");
        assert.equal((await pushAsync(sender.channel, "shout", { marker: true })).status, "ok");
        assert.deepEqual(await countsBeforeMarker(members, isShout(2), isMarker), [0, 1, 1, 1, 1, 1]);
      });

      test("endpoint.broadcast from a plain script reaches the clients of every node", async () => {
        const t = topic("cluster-script");
        const members = await everyone(t);
        const run = await runPython(["-m", "tests.cluster.broadcast", t, "announcement", '{"from":"script"}'], env);
        assert.equal(run.code, 0, `the script failed:\n${run.output}`);
        // Published before the marker by a single engine: it arrives first at every node.
        assert.equal((await pushAsync(members[5].channel, "shout", { marker: true })).status, "ok");
        const isAnnouncement = (e) => e.type === "announcement" && e.payload.from === "script";
        assert.deepEqual(await countsBeforeMarker(members, isAnnouncement, isMarker), [1, 1, 1, 1, 1, 1]);
      });

      test("a disconnect broadcast to a socket id closes that socket on another node", async () => {
        const t = topic("cluster-disconnect");
        const user = `u-${RUN}`;
        const target = await member(clients, nodes[1], t, { params: { user_id: user } });
        const bystander = await member(clients, nodes[2], t, { params: { user_id: `${user}-other` } });
        const actor = await member(clients, nodes[0], t);
        const reply = await pushAsync(actor.channel, "disconnect", { id: `user_socket:${user}` });
        assert.equal(reply.status, "ok");
        await target.client.log.waitFor((e) => e.type === "close", "the target socket on node B is closed");
        assert.equal(bystander.client.log.count((e) => e.type === "close"), 0, "another socket is untouched");
        await ping(bystander.client);
      });

      test("direct_broadcast reaches the clients of the named node only", async () => {
        const t = topic("cluster-direct");
        const members = await everyone(t);
        const [a, b] = [members[0], members[2]];
        assert.equal((await pushAsync(a.channel, "direct", { n: 3, node: b.node })).status, "ok");
        assert.equal((await pushAsync(a.channel, "shout", { marker: true })).status, "ok");
        for (const m of members.filter((m) => m.node === b.node)) {
          await m.events.waitFor(isShout(3), "the direct broadcast reaches node B's clients");
        }
        const counts = await countsBeforeMarker(members, isShout(3), isMarker);
        assert.deepEqual(
          members.map((m, i) => (m.node === b.node ? "B" : counts[i])),
          [0, 0, "B", "B", 0, 0],
        );
      });
    },
  );
}

await suite(
  "one node of three killed (--workers 3 on one port, Redis)",
  !sharedUp.redis && `redis is not running at ${ENGINES.redis.url} (make test starts a private one)`,
  () => {
    const clients = new Clients();
    let server;

    before(async () => {
      const env = { PHX_CLUSTER_ENGINE: "redis", PHX_CLUSTER_URL: ENGINES.redis.url, PHX_CLUSTER_PREFIX: prefix() };
      server = await startServer({ app: APP, env, args: ["--workers", "3"] });
      // The port accepts once the first worker listens; wait for all three.
      await eventually(
        () => (server.stderr.match(/Application startup complete/g) || []).length >= 3,
        "the three workers have started",
      );
    });
    after(async () => {
      await clients.closeAll();
      if (server) await server.stop();
    });

    test("the others keep serving; the dead node's clients reconnect to a survivor and rejoin", async () => {
      const t = topic("cluster-kill");
      const members = [];
      // The kernel spreads connections over the workers: open clients until two are covered.
      while (new Set(members.map((m) => m.pid)).size < 2) {
        assert.ok(members.length < 30, `30 connections all landed on one worker: ${members.map((m) => m.pid)}`);
        members.push(await member(clients, server, t));
      }
      const victim = members[0].pid;
      const orphans = members.filter((m) => m.pid === victim);
      const survivors = members.filter((m) => m.pid !== victim);
      process.kill(victim, "SIGKILL");

      for (const m of orphans) {
        await m.client.log.waitFor((e) => e.type === "close", "the killed node's client sees its socket close");
        const rejoined = await m.events.waitFor(
          (e) => e.type === "join_ok" && e.payload.pid !== victim,
          "the client reconnects and rejoins on another node",
          3 * WAIT_MS,
        );
        m.pid = rejoined.payload.pid;
        m.node = rejoined.payload.node;
      }
      for (const m of survivors) {
        assert.equal(m.client.log.count((e) => e.type === "close"), 0, `a client of node ${m.node} was disconnected`);
      }
      const sender = survivors[0];
      assert.equal((await pushAsync(sender.channel, "shout", { n: 4 })).status, "ok");
      assert.equal((await pushAsync(sender.channel, "shout", { marker: true })).status, "ok");
      assert.deepEqual(
        await countsBeforeMarker(members, isShout(4), isMarker),
        members.map(() => 1),
        "everyone, rejoined clients included, gets the broadcast once",
      );
    });
  },
);

/** A private redis-server / nats-server on a free port, killed and restarted by PID. */
async function ownEngine(engine) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `phx-${engine}-`));
  const args =
    engine === "redis"
      ? ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]
      : ["-a", "127.0.0.1", "-p", String(port)];
  const server = {
    url: `${engine}://127.0.0.1:${port}`,
    proc: null,
    async start() {
      this.proc = spawn(ENGINES[engine].binary, args, { stdio: "ignore" });
      await eventually(() => canConnect(port), `${engine} listens on ${port}`, 10000, 50);
    },
    async kill() {
      const proc = this.proc;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGKILL");
      await withTimeout(exited, WAIT_MS, `${engine} exits after SIGKILL`);
    },
    async close() {
      await this.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}

for (const [engine, spec] of Object.entries(ENGINES)) {
  await suite(
    `${engine} restarted under two nodes`,
    !binaryThere[engine] && `${spec.binary} is not installed`,
    () => {
      const clients = new Clients();
      let engineServer;
      let nodes = [];

      before(async () => {
        engineServer = await ownEngine(engine);
        const env = { PHX_CLUSTER_ENGINE: engine, PHX_CLUSTER_URL: engineServer.url, PHX_CLUSTER_PREFIX: prefix() };
        nodes = await Promise.all([0, 1].map(() => startServer({ app: APP, env })));
      });
      after(async () => {
        await clients.closeAll();
        await Promise.all(nodes.map((n) => n.stop()));
        if (engineServer) await engineServer.close();
      });

      test("nodes keep serving, broadcasts fail meanwhile, then reconnect and broadcasts arrive", async () => {
        const t = topic(`cluster-${engine}-restart`);
        const a = await member(clients, nodes[0], t);
        const b = await member(clients, nodes[1], t);
        assert.equal((await pushAsync(a.channel, "shout", { n: 0 })).status, "ok");
        await b.events.waitFor(isShout(0), "a broadcast crosses before the restart");

        await engineServer.kill();
        const failed = await eventually(async () => {
          const r = await pushAsync(a.channel, "shout", { n: -1 });
          return r.status === "error" && r;
        }, "a broadcast returns an error while the engine is down");
        assert.match(failed.response.reason, new RegExp(engine));
        for (const m of [a, b]) {
          await ping(m.client); // the node still serves its clients
          assert.equal((await pushAsync(m.channel, "whoami", {})).response.pid, m.pid);
          assert.equal(m.client.log.count((e) => e.type === "close"), 0);
        }

        await engineServer.start();
        let n = 0;
        await eventually(async () => {
          n += 1;
          const r = await pushAsync(a.channel, "shout", { n: 100 + n });
          if (r.status !== "ok") return false;
          try {
            await b.events.waitFor(isShout(100 + n), "", 500);
            return true;
          } catch {
            return false;
          }
        }, "broadcasts from node A reach node B again after the restart");
        assert.equal((await pushAsync(b.channel, "shout", { n: 1000 })).status, "ok");
        assert.equal((await pushAsync(b.channel, "shout", { marker: true })).status, "ok");
        assert.deepEqual(await countsBeforeMarker([a, b], isShout(1000), isMarker), [1, 1]);

        for (const node of nodes) {
          const lost = node.stderr.match(new RegExp(`lost the connection to ${engine}`, "g")) || [];
          const back = node.stderr.match(new RegExp(`reconnected to ${engine}`, "g")) || [];
          assert.equal(lost.length, 1, `one outage line, not one per attempt or message:\n${node.stderr}`);
          assert.equal(back.length, 1, `one reconnection line:\n${node.stderr}`);
        }
      });
    },
  );
}
