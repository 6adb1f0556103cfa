// One HTTP/1.1 request over a byte stream to an upstream (an SSH channel in the product, a TCP socket in
// tests): resolves when the response head arrives, rejects if the exchange fails before that.
import { Agent, type ClientRequestArgs, type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest } from "node:http";
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
  /** Ends the exchange and its channel (the client left, the exchange failed, or the proxy closes); after a
   * completed exchange on a kept-alive channel it does nothing, the channel being back with its agent. */
  abort(): void;
  /** Whether the request went out on a kept-alive channel used before (one the server may just have closed). */
  reused(): boolean;
}

/** How long a kept-alive channel may sit unused: below uvicorn's own idle limit (timeout_keep_alive, 5 s). */
export const IDLE_CHANNEL_MS = 2_000;

/**
 * Keeps channels to one upstream open between requests (HTTP/1.1 keep-alive), so a request costs neither a
 * new SSH channel (a round trip to the host) nor a new TCP connection from sshd to the server.
 */
export class ChannelAgent extends Agent {
  constructor(private readonly openChannel: () => Promise<Duplex>) {
    super({ keepAlive: true, maxFreeSockets: 16, timeout: IDLE_CHANNEL_MS, scheduling: "lifo" });
  }

  // node:http calls this for every new connection; the callback form lets it be asynchronous.
  override createConnection(_options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    this.openChannel().then(
      (channel) => callback?.(null, asSocketLike(channel)),
      (err: unknown) => callback?.(err instanceof Error ? err : new Error(String(err)), undefined as unknown as Duplex),
    );
    return undefined;
  }
}

export function exchange(via: Duplex | ChannelAgent, req: UpstreamRequest): Exchange {
  const channel = via instanceof ChannelAgent ? undefined : via;
  const upstream = httpRequest({
    method: req.method,
    path: req.path,
    headers: req.headers,
    ...(channel ? { createConnection: () => asSocketLike(channel) } : { agent: via as ChannelAgent }),
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
      channel?.destroy();
    },
    reused: () => upstream.reusedSocket,
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
