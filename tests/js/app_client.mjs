// One official `phoenix` client driven by the Python app tests (tests/apps/):
// node tests/js/app_client.mjs URL TOPIC [PARAMS_JSON] [HEADERS_JSON]
// Prints one JSON object per line: {"kind":"joined","response":...},
// {"kind":"join_error","response":...}, {"kind":"socket_error"} (the socket was
// refused or lost; the script exits), {"kind":"event","event":...,"payload":...}
// for every message the channel receives. A line "push EVENT PAYLOAD_JSON" on
// stdin pushes and prints {"kind":"reply","event":...,"status":...,"response":...}.
import readline from "node:readline";
import { Socket } from "phoenix";
import WebSocket from "ws";

const [url, topic, paramsJson = "{}", headersJson = "{}"] = process.argv.slice(2);
const headers = JSON.parse(headersJson);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

class HeaderWebSocket extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, { headers });
  }
}

const socket = new Socket(url, {
  params: JSON.parse(paramsJson),
  transport: HeaderWebSocket,
  reconnectAfterMs: () => 60000,
});
socket.onError(() => {
  out({ kind: "socket_error" });
  process.exit(0);
});
socket.connect();
const channel = socket.channel(topic, {});
channel.onMessage = (event, payload, ref) => {
  if (!event.startsWith("phx_") && !event.startsWith("chan_reply_")) {
    out({ kind: "event", event, payload, ref });
  }
  return payload;
};
channel
  .join()
  .receive("ok", (response) => out({ kind: "joined", response }))
  .receive("error", (response) => out({ kind: "join_error", response }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, event, ...rest] = line.split(" ");
  if (command !== "push") return;
  const payload = JSON.parse(rest.join(" ") || "{}");
  const reply = (status) => (response) => out({ kind: "reply", event, status, response });
  channel
    .push(event, payload)
    .receive("ok", reply("ok"))
    .receive("error", reply("error"))
    .receive("timeout", reply("timeout"));
});
process.stdin.on("end", () => process.exit(0));
