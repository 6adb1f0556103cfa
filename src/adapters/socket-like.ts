// node:http only needs a Duplex to speak HTTP/1.1 over, but pokes at a few socket methods that an SSH
// channel lacks.
import type { Duplex } from "node:stream";

export function asSocketLike(channel: Duplex): Duplex {
  const noop = (): void => undefined;
  const missing: Record<string, unknown> = Object.fromEntries(
    ["setKeepAlive", "setNoDelay", "ref", "unref"].filter((k) => !(k in channel)).map((k) => [k, noop]),
  );
  if (!("setTimeout" in channel)) missing.setTimeout = idleTimeout(channel);
  return Object.assign(channel, missing);
}

/**
 * socket.setTimeout for a stream that has none: emits 'timeout' once `ms` after the call (0 disarms). An
 * http.Agent arms it each time a kept-alive stream goes idle and drops the stream when it fires while idle;
 * a firing during a request is ignored there. `timeout` is deliberately not recorded on the stream, so the
 * agent arms it again at every return to the idle list.
 */
function idleTimeout(channel: Duplex): (ms: number, cb?: () => void) => Duplex {
  let timer: NodeJS.Timeout | undefined;
  channel.once("close", () => clearTimeout(timer));
  return (ms, cb) => {
    clearTimeout(timer);
    // As net.Socket#setTimeout: 0 with a callback removes that listener (node:http does this each time a
    // kept-alive request ends), any other value adds it once.
    if (cb) {
      if (ms === 0) channel.removeListener("timeout", cb);
      else channel.once("timeout", cb);
    }
    if (ms > 0 && !channel.destroyed) {
      timer = setTimeout(() => channel.emit("timeout"), ms);
      timer.unref();
    }
    return channel;
  };
}
