// Recovery on rejoin for the official `phoenix` JS client, with no fork of it.
//
// A topic whose channel declares `history = History(...)` on a
// phoenix-channels server gives every broadcast a position, carried in the
// message's `ref` as "<epoch>:<offset>". This module remembers the last
// position a channel saw and sends it in the join params at every (re)join,
// under the reserved key `phx_recover`; the server then replays what the
// channel missed, in order and once, before live messages, and says how it
// went in a `phx_recovery` push that comes right after the join reply.
//
//   import { Socket } from "phoenix";
//   import { recoverable } from "./recovery.mjs";
//
//   const socket = new Socket("/socket");
//   socket.connect();
//   const channel = recoverable(socket, "room:lobby", { nick: "ann" }, {
//     onRecovery(outcome) {
//       // {recovered: true|false, reason: null|"no_position"|"too_old"|
//       //  "epoch_changed"|"not_found"|"history_off"|"invalid_position",
//       //  position: "<epoch>:<offset>"|null, replayed: <count>, rejoin: bool}
//       if (outcome.rejoin && !outcome.recovered) reloadStateFromTheServer();
//     },
//   });
//   channel.on("new_msg", (payload, ref) => render(payload));
//   channel.join();
//
// It uses only public parts of the client: params given as a function (the
// client evaluates them again at every rejoin) and the overridable
// `channel.onMessage(event, payload, ref)` hook, which sees every message
// with its ref. Ship it with your app or import it from the
// phoenix-channels package (`phoenix_channels/static/recovery.mjs`). If the
// app sets `channel.onMessage` itself afterwards, it should call the
// function it replaces, or positions are no longer tracked.

/** The reserved join-payload key the position is sent under. */
export const RECOVER_KEY = "phx_recover";
/** The event the server pushes with the outcome. */
export const RECOVERY_EVENT = "phx_recovery";

const POSITION = /^([A-Za-z0-9_-]{1,64}):(\d+)$/;

/** `{epoch, offset}` of a position string, or null if `ref` is not one. */
export function parsePosition(ref) {
  if (typeof ref !== "string") return null;
  const match = POSITION.exec(ref);
  return match ? { epoch: match[1], offset: Number(match[2]) } : null;
}

/**
 * Creates `socket.channel(topic, ...)` that recovers on every rejoin.
 *
 * `params`: the join params (an object, or a function returning one).
 * `options.onRecovery(outcome)`: called once per join with the server's
 * outcome, plus `rejoin` (false for the channel's first join, where
 * `reason` is "no_position" and there is nothing to recover).
 * `options.position`: a position to start from (e.g. kept in
 * sessionStorage across page loads).
 *
 * The returned channel has `channel.recovery`: `{position, outcome}`, the
 * last position seen and the last outcome.
 */
export function recoverable(socket, topic, params = {}, options = {}) {
  const state = { position: options.position ?? null, outcome: null };
  const userParams = typeof params === "function" ? params : () => params;
  let joins = 0;
  const channel = socket.channel(topic, () => ({ ...userParams(), [RECOVER_KEY]: state.position }));
  const inner = channel.onMessage.bind(channel);
  channel.onMessage = (event, payload, ref, joinRef) => {
    if (event === RECOVERY_EVENT) {
      // Recovered: the replay that follows moves the position on, message by
      // message (a cut in the middle of it loses nothing). Not recovered: the
      // client starts again from where the server stands.
      if (payload && !payload.recovered) state.position = payload.position ?? null;
    } else {
      const seen = parsePosition(ref);
      if (seen) {
        const now = parsePosition(state.position);
        if (!now || now.epoch !== seen.epoch || seen.offset > now.offset) state.position = ref;
      }
    }
    return inner(event, payload, ref, joinRef);
  };
  channel.on(RECOVERY_EVENT, (payload) => {
    const outcome = { ...payload, rejoin: joins++ > 0 || options.position != null };
    state.outcome = outcome;
    if (options.onRecovery) options.onRecovery(outcome);
  });
  channel.recovery = state;
  return channel;
}
