// node:http only needs a Duplex to speak HTTP/1.1 over, but pokes at a few socket methods that an SSH
// channel lacks.
import type { Duplex } from "node:stream";

export function asSocketLike(channel: Duplex): Duplex {
  const noop = (): void => undefined;
  const missing = Object.fromEntries(
    ["setKeepAlive", "setNoDelay", "setTimeout", "ref", "unref"].filter((k) => !(k in channel)).map((k) => [k, noop]),
  );
  return Object.assign(channel, missing);
}
