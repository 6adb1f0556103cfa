// One HTTP/1.1 request over a byte stream to an upstream (an SSH channel in the product, a TCP socket in
// tests): resolves when the response head arrives, rejects if the exchange fails before that.
import { type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest } from "node:http";
import type { Duplex, Readable } from "node:stream";
import { asSocketLike } from "../socket-like.js";

export interface UpstreamRequest {
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  /** A buffered body (sent as is, so it can be sent again elsewhere), or the rest of a large one. */
  body: Buffer | { head: Buffer[]; rest: Readable };
}

export interface Exchange {
  response: Promise<IncomingMessage>;
  /** Ends the exchange and its channel (the response ended, the client left, or the proxy closes). */
  abort(): void;
}

export function exchange(channel: Duplex, req: UpstreamRequest): Exchange {
  const upstream = httpRequest({
    method: req.method,
    path: req.path,
    headers: req.headers,
    createConnection: () => asSocketLike(channel),
  });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    upstream.once("response", resolve);
    upstream.once("error", reject);
  });
  // An error after the response head belongs to the response stream; keep it from being unhandled.
  response.catch(() => undefined);
  if (Buffer.isBuffer(req.body)) {
    upstream.end(req.body);
  } else {
    for (const b of req.body.head) upstream.write(b);
    req.body.rest.pipe(upstream);
  }
  return {
    response,
    abort: () => {
      upstream.destroy();
      channel.destroy();
    },
  };
}

/** GET `path` over a fresh stream from `open`: true on 2xx. Never rejects. */
export async function httpProbe(open: () => Promise<Duplex>, path: string, signal: AbortSignal): Promise<boolean> {
  let channel: Duplex | undefined;
  const onAbort = (): void => {
    channel?.destroy();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    channel = await open();
    if (signal.aborted) return false;
    const ex = exchange(channel, { method: "GET", path, headers: { connection: "close" }, body: Buffer.alloc(0) });
    const res = await ex.response;
    res.resume();
    ex.abort();
    const status = res.statusCode ?? 0;
    return status >= 200 && status < 300;
  } catch {
    return false;
  } finally {
    signal.removeEventListener("abort", onAbort);
    channel?.destroy();
  }
}
