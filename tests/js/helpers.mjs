// Shared helpers of the JS wire suite: start/stop the Python server, build
// official `phoenix` client sockets on top of `ws` or of phoenix's own
// `LongPoll` (over Node's fetch), and wait for events with bounded timeouts
// that fail with a clear message.
//
// PHX_TRANSPORT=websocket|longpoll (default websocket) picks the transport of
// every client the suite creates; tests branch on `LONGPOLL` only where the
// transports genuinely differ.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LongPoll, Socket } from "phoenix";
import WebSocket from "ws";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..");
export const PYTHON = process.env.PHX_PYTHON || path.join(REPO_ROOT, ".venv", "bin", "python");
export const APP = "tests.js.server_app:endpoint";

/** The transport of the run: PHX_TRANSPORT=websocket|longpoll (default websocket). */
export const TRANSPORT = (process.env.PHX_TRANSPORT || "websocket").trim().toLowerCase();
if (TRANSPORT !== "websocket" && TRANSPORT !== "longpoll") {
  throw new Error(`PHX_TRANSPORT must be "websocket" or "longpoll", got ${JSON.stringify(process.env.PHX_TRANSPORT)}`);
}
/** True when the suite runs over HTTP long polling. */
export const LONGPOLL = TRANSPORT === "longpoll";
export { LongPoll };

/** Default bound of every wait in the suite (ms). */
export const WAIT_MS = 5000;
const SERVER_START_MS = 15000;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (bound to port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      sock.removeAllListeners();
      sock.destroy();
      resolve(ok);
    };
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
    sock.setTimeout(1000, () => done(false));
  });
}

const running = new Set();
process.on("exit", () => {
  for (const server of running) server.killNow("SIGKILL");
});

/**
 * Starts `python -m phoenix_channels serve tests.js.server_app:endpoint` on
 * `port` (a free one if not given) with cwd = repo root, and resolves once the
 * port accepts TCP connections. `app` (another module:endpoint), `env`
 * (added to the environment) and `args` (more command-line arguments, e.g.
 * `--workers 3`) change what is started. Rejects (with the server's stderr) if the
 * process exits first or the port is not open within 15 s.
 */
export async function startServer({ port, app = APP, env: extraEnv = {}, args: extraArgs = [] } = {}) {
  port = port ?? (await freePort());
  const srcDir = path.join(REPO_ROOT, "src");
  const env = {
    ...process.env,
    PYTHONUNBUFFERED: "1",
    // Lets the suite run from a checkout even when the package is not installed.
    PYTHONPATH: [srcDir, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
    ...extraEnv,
  };
  const args = ["-m", "phoenix_channels", "serve", app, "--host", "127.0.0.1", "--port", String(port), ...extraArgs];
  const proc = spawn(PYTHON, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (d) => (stdout += d));
  proc.stderr.on("data", (d) => (stderr += d));
  let exited = null;
  let spawnError = null;
  const exitPromise = new Promise((resolve) => {
    proc.once("exit", (code, signal) => {
      exited = { code, signal };
      saveServerLog();
      running.delete(server);
      resolve(exited);
    });
    proc.once("error", (err) => {
      spawnError = err;
      exited = exited || { code: null, signal: null };
      running.delete(server);
      resolve(exited);
    });
  });

  // PHX_SERVER_LOG_DIR=<dir>: keep each server's output as <dir>/server-<port>-<pid>.log.
  const saveServerLog = () => {
    const dir = process.env.PHX_SERVER_LOG_DIR;
    if (!dir || !proc.pid) return;
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(
        path.join(dir, `server-${port}-${proc.pid}.log`),
        `${PYTHON} ${args.join(" ")}\nexit: ${JSON.stringify(exited)}\n--- stderr ---\n${stderr}\n--- stdout ---\n${stdout}`,
      );
    } catch {
      /* logging is best effort */
    }
  };

  const server = {
    port,
    url: `ws://127.0.0.1:${port}/socket`,
    proc,
    get pid() {
      return proc.pid;
    },
    get stderr() {
      return stderr;
    },
    get stdout() {
      return stdout;
    },
    get exited() {
      return exited;
    },
    killNow(signal = "SIGKILL") {
      if (exited === null && proc.pid) {
        try {
          process.kill(proc.pid, signal);
        } catch {
          /* already gone */
        }
      }
    },
    /** Kills the process by PID and resolves when it has exited. */
    async kill(signal = "SIGKILL") {
      if (exited !== null) return exited;
      server.killNow(signal);
      return exitPromise;
    },
    /** Graceful stop (SIGTERM), SIGKILL after 5 s. */
    async stop() {
      if (exited !== null) return exited;
      server.killNow("SIGTERM");
      const timer = setTimeout(() => server.killNow("SIGKILL"), 5000);
      try {
        return await exitPromise;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  running.add(server);

  const deadline = Date.now() + SERVER_START_MS;
  for (;;) {
    if (exited !== null) {
      throw new Error(
        `server exited before accepting connections (code=${exited.code}, signal=${exited.signal})` +
          (spawnError ? `; spawn error: ${spawnError.message}` : "") +
          `\ncommand: ${PYTHON} ${args.join(" ")} (cwd ${REPO_ROOT})\n--- server stderr ---\n${stderr}\n--- server stdout ---\n${stdout}`,
      );
    }
    if (await tryConnect(port)) return server;
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(
        `server did not accept TCP connections on 127.0.0.1:${port} within ${SERVER_START_MS} ms` +
          `\ncommand: ${PYTHON} ${args.join(" ")} (cwd ${REPO_ROOT})\n--- server stderr ---\n${stderr}\n--- server stdout ---\n${stdout}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/** Resolves with `promise`, or rejects after `ms` with `message`. */
export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const text = typeof message === "function" ? message() : message;
      reject(new Error(`timed out after ${ms} ms: ${text}`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * An append-only list of observed events; `waitFor` resolves with the first
 * entry (old or future) matching a predicate, bounded by a timeout.
 */
export class EventLog {
  constructor(name = "events") {
    this.name = name;
    this.entries = [];
    this.waiters = [];
  }

  push(entry) {
    this.entries.push(entry);
    for (const w of [...this.waiters]) {
      if (w.pred(entry)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(entry);
      }
    }
  }

  filter(pred) {
    return this.entries.filter(pred);
  }

  count(pred) {
    return this.entries.filter(pred).length;
  }

  /** Waits for one entry matching `pred`. */
  waitFor(pred, description, ms = WAIT_MS) {
    const found = this.entries.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = { pred, resolve };
      this.waiters.push(waiter);
    });
    return withTimeout(p, ms, () => `${this.name}: ${description}\n  seen so far: ${this.describe()}`).finally(() => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) this.waiters.splice(i, 1);
    });
  }

  /** Waits until at least `n` entries match `pred`; resolves with all matches. */
  waitForCount(pred, n, description, ms = WAIT_MS) {
    const enough = () => this.count(pred) >= n;
    if (enough()) return Promise.resolve(this.filter(pred));
    let waiter;
    const p = new Promise((resolve) => {
      waiter = { pred: enough, resolve };
      this.waiters.push(waiter);
    });
    const message = () =>
      `${this.name}: ${description} (wanted ${n}, got ${this.count(pred)})\n  seen so far: ${this.describe()}`;
    return withTimeout(p, ms, message)
      .then(() => this.filter(pred))
      .finally(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
      });
  }

  describe() {
    const shown = this.entries.slice(-30).map((e) => {
      try {
        if (e instanceof ArrayBuffer) return describeBytes(e);
        return JSON.stringify(e, (_k, v) => (v instanceof ArrayBuffer ? describeBytes(v) : v));
      } catch {
        return String(e);
      }
    });
    return shown.length ? "\n    " + shown.join("\n    ") : "(nothing)";
  }
}

// ---------------------------------------------------------------------------
// Client sockets
// ---------------------------------------------------------------------------

let uniq = 0;
/** A topic no other test uses: `room:<name>-<pid>-<n>`. */
export function topic(name) {
  uniq += 1;
  return `room:${name}-${process.pid}-${uniq}`;
}

/**
 * A `ws` WebSocket class that records the raw frames the client sends and
 * receives (strings for text frames, ArrayBuffer copies for binary frames),
 * for assertions on the exact wire format.
 */
export function recordingTransport(sentLog, receivedLog) {
  const copy = (data) => (data instanceof ArrayBuffer ? data.slice(0) : ArrayBuffer.isView(data) ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => receivedLog.push(copy(event.data)));
    }

    send(data, ...rest) {
      sentLog.push(copy(data));
      return super.send(data, ...rest);
    }
  };
}

/**
 * A phoenix `LongPoll` subclass that records the frames the client sends
 * (what `send(body)` gets: a string, or an ArrayBuffer copy for a binary
 * frame, before LongPoll base64-encodes it into an ndjson line) and the
 * frames it receives (each message of a poll response, as handed to
 * `onmessage({data})`: always a string).
 *
 * Note: phoenix's Socket keeps custom `encode`/`decode` options only when its
 * transport is not `LongPoll` itself (socket.js: `this.transport !== LongPoll`),
 * so with this subclass they are kept, as they are when a WebSocket socket
 * falls back to LongPoll (`longPollFallbackMs`). v1.test.mjs covers both.
 */
export function recordingLongPoll(sentLog, receivedLog) {
  const copy = (data) => (data instanceof ArrayBuffer ? data.slice(0) : ArrayBuffer.isView(data) ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
  return class RecordingLongPoll extends LongPoll {
    // LongPoll's constructor assigns `this.onmessage = ...` and so does the
    // socket's Connection later: both go through this setter.
    get onmessage() {
      return this._recordingOnMessage;
    }

    set onmessage(handler) {
      this._recordingOnMessage = (event) => {
        receivedLog.push(copy(event.data));
        return handler.call(this, event);
      };
    }

    send(body) {
      sentLog.push(copy(body));
      return super.send(body);
    }
  };
}

/**
 * Creates (not connects) a phoenix `Socket` to `server`. Records socket
 * events in `client.log` ({type: "open"|"close"|"error"|"message", ...}, where
 * "message" entries are the decoded {topic, event, payload, ref, join_ref}
 * given to socket.onMessage), and raw frames in `client.sent` /
 * `client.received`. `via` ("websocket"|"longpoll", default the run's
 * TRANSPORT) picks the transport; a `transport` option replaces it (and then
 * no frames are recorded unless that class records them).
 */
export function makeClient(server, { params = {}, via = TRANSPORT, ...opts } = {}) {
  const log = new EventLog("socket events");
  const sent = new EventLog("sent frames");
  const received = new EventLog("received frames");
  if (via !== "websocket" && via !== "longpoll") throw new Error(`unknown transport ${via}`);
  const socket = new Socket(server.url, {
    transport: via === "longpoll" ? recordingLongPoll(sent, received) : recordingTransport(sent, received),
    params,
    reconnectAfterMs: () => 50,
    rejoinAfterMs: () => 50,
    timeout: WAIT_MS,
    ...opts,
  });
  socket.onOpen(() => log.push({ type: "open" }));
  socket.onClose((event) => log.push({ type: "close", code: event && event.code, reason: event && event.reason }));
  socket.onError((error) =>
    log.push({ type: "error", message: String((error && (error.message || (error.error && error.error.message))) || error) }),
  );
  socket.onMessage((msg) => log.push({ type: "message", ...msg }));
  return { socket, log, sent, received, server, via };
}

/** Tracks clients of a test so they can all be disconnected afterwards. */
export class Clients {
  constructor() {
    this.all = [];
  }

  /** Creates a client, connects it and waits for its first open. */
  async open(server, options = {}) {
    const client = this.create(server, options);
    client.socket.connect();
    await client.log.waitFor((e) => e.type === "open", `socket to ${server.url} opens`);
    return client;
  }

  create(server, options = {}) {
    const client = makeClient(server, options);
    this.all.push(client);
    return client;
  }

  async closeAll() {
    const clients = this.all.splice(0);
    await Promise.all(
      clients.map(
        ({ socket }) =>
          new Promise((resolve) => {
            const t = setTimeout(resolve, 2000);
            socket.disconnect(() => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
  }
}

// ---------------------------------------------------------------------------
// Channel operations as promises
// ---------------------------------------------------------------------------

/**
 * Resolves with {status, response} for the first outcome of a phoenix Push
 * among `statuses` ("timeout" included), bounded by `ms`.
 */
export function outcome(push, description, { statuses = ["ok", "error", "timeout"], ms = WAIT_MS + 1000 } = {}) {
  const p = new Promise((resolve) => {
    for (const status of statuses) push.receive(status, (response) => resolve({ status, response }));
  });
  return withTimeout(p, ms, `no ${statuses.join("/")} outcome for ${description}`);
}

/** Pushes and resolves with {status, response, ref}. */
export async function pushAsync(channel, event, payload, { timeout, ms } = {}) {
  const push = timeout === undefined ? channel.push(event, payload) : channel.push(event, payload, timeout);
  const result = await outcome(push, `push "${event}" on ${channel.topic}`, ms ? { ms } : {});
  return { ...result, ref: push.ref };
}

/**
 * Creates channel `name` on `client`, joins it and records channel-level
 * events in `chan.events` ({type: "join_ok"|"join_error"|"join_timeout"|
 * "error"|"close"|<event>, payload, joinRef}). Resolves with
 * {channel, events, join: {status, response}} for the first join outcome.
 */
export async function join(client, topicName, params = {}, { listen = [] } = {}) {
  const channel = client.socket.channel(topicName, params);
  const events = new EventLog(`channel ${topicName} events`);
  channel.onError((reason) => events.push({ type: "error", payload: reason }));
  channel.onClose((payload) => events.push({ type: "close", payload }));
  for (const ev of listen) {
    channel.on(ev, (payload, ref, joinRef) => events.push({ type: ev, payload, ref, joinRef }));
  }
  const push = channel.join();
  push
    .receive("ok", (response) => events.push({ type: "join_ok", payload: response, joinRef: channel.joinRef() }))
    .receive("error", (response) => events.push({ type: "join_error", payload: response, joinRef: channel.joinRef() }))
    .receive("timeout", () => events.push({ type: "join_timeout", joinRef: channel.joinRef() }));
  const first = await events.waitFor(
    (e) => e.type === "join_ok" || e.type === "join_error" || e.type === "join_timeout",
    `join of ${topicName} gets a reply`,
  );
  const status = { join_ok: "ok", join_error: "error", join_timeout: "timeout" }[first.type];
  return { channel, events, join: { status, response: first.payload, joinRef: first.joinRef } };
}

/** socket.ping as a promise resolving with the RTT (ms). */
export function ping(client, ms = WAIT_MS) {
  const p = new Promise((resolve, reject) => {
    const ok = client.socket.ping((rtt) => resolve(rtt));
    if (!ok) reject(new Error("socket.ping returned false: socket is not connected"));
  });
  return withTimeout(p, ms, "heartbeat reply to socket.ping");
}

/**
 * Sends a raw message through the phoenix socket (not through a channel), e.g.
 * a push to a topic the client already left, and waits for its phx_reply.
 */
export async function rawPush(client, { topic: t, event, payload = {}, join_ref = null }) {
  const ref = client.socket.makeRef();
  client.socket.push({ topic: t, event, payload, ref, join_ref });
  const reply = await client.log.waitFor(
    (e) => e.type === "message" && e.event === "phx_reply" && e.ref === ref,
    `phx_reply to raw ${event} on ${t} (ref ${ref})`,
  );
  return reply;
}

/** Server messages (socket onMessage) of `client` for topic `t`. */
export function messagesFor(client, t, event) {
  return client.log.filter((e) => e.type === "message" && e.topic === t && (event === undefined || e.event === event));
}

/** `<binary N bytes: hex...>` for messages. */
export function describeBytes(buf) {
  const u8 = new Uint8Array(buf);
  const hex = Array.from(u8.slice(0, 64), (b) => b.toString(16).padStart(2, "0")).join("");
  return `<binary ${u8.length} bytes: ${hex}${u8.length > 64 ? "..." : ""}>`;
}

/** Concatenation of byte arrays / numbers / UTF-8 strings into an ArrayBuffer. */
export function concatBytes(...parts) {
  const chunks = parts.map((p) =>
    typeof p === "string" ? Array.from(new TextEncoder().encode(p)) : typeof p === "number" ? [p] : Array.from(new Uint8Array(p)),
  );
  return new Uint8Array(chunks.flat()).buffer;
}

/** Byte-wise equality of two ArrayBuffers. */
export function sameBytes(a, b) {
  if (!(a instanceof ArrayBuffer) || !(b instanceof ArrayBuffer) || a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.every((v, i) => v === y[i]);
}

/** UTF-8 byte length of a string. */
export function utf8Length(s) {
  return new TextEncoder().encode(s).byteLength;
}

/** Bytes of an ArrayBuffer as a plain array (for deepEqual). */
export function bytes(buf) {
  assertArrayBuffer(buf);
  return Array.from(new Uint8Array(buf));
}

export function assertArrayBuffer(value) {
  if (!(value instanceof ArrayBuffer)) {
    throw new Error(`expected an ArrayBuffer, got ${Object.prototype.toString.call(value)}: ${JSON.stringify(value)}`);
  }
}

/** An ArrayBuffer holding `values`. */
export function buffer(values) {
  return new Uint8Array(values).buffer;
}
