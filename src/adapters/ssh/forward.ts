// Local ports that lead through a host's SSH connection: a raw TCP forward, and an HTTP proxy that adds
// headers (the server's API key) to every request.
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { createServer, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { SshError } from "../../errors.js";
import { asSocketLike } from "../socket-like.js";
import { DEFAULT_FORWARD_TIMEOUT_MS, type HostSession } from "./session.js";
import { errorMessage, runStep } from "./step.js";

export interface LocalForwardOptions {
  session: HostSession;
  destHost: string;
  destPort: number;
  localPort: number;
  bindHost?: string;
  signal?: AbortSignal;
  forwardTimeoutMs?: number;
  onError?: (error: SshError) => void;
}

export interface LocalForward {
  port: number;
  close(): Promise<void>;
}

export async function startLocalForward(opts: LocalForwardOptions): Promise<LocalForward> {
  const { session, destHost, destPort } = opts;
  const bindHost = opts.bindHost ?? "127.0.0.1";
  const open = new Set<Duplex>();
  let closing = false;
  // allowHalfOpen: a client may end its request side and still expect the response.
  const server = createServer({ allowHalfOpen: true }, (sock: Socket) => {
    open.add(sock);
    sock.once("close", () => open.delete(sock));
    sock.on("error", () => sock.destroy());
    session.forwardOut(destHost, destPort, { timeoutMs: opts.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS }).then(
      (channel) => {
        if (closing || sock.destroyed) {
          channel.destroy();
          return;
        }
        open.add(channel);
        channel.once("close", () => {
          open.delete(channel);
          sock.destroy();
        });
        channel.on("error", () => channel.destroy());
        sock.once("close", () => channel.destroy());
        sock.pipe(channel);
        channel.pipe(sock);
      },
      (err: unknown) => {
        sock.destroy();
        if (err instanceof SshError) opts.onError?.(err);
      },
    );
  });
  const close = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    opts.signal?.removeEventListener("abort", onAbort);
    for (const stream of open) stream.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  const onAbort = (): void => void close();
  try {
    await runStep<void>(session.host, "forward", `listening on ${bindHost}:${opts.localPort}`, { signal: opts.signal }, (step) => {
      server.once("error", (cause: Error) =>
        step.reject(
          new SshError({
            host: session.host,
            stage: "forward",
            cause,
            message: `cannot listen on ${bindHost}:${opts.localPort}: ${cause.message}`,
            hint: "Another program may use that port; pick another local port (0 picks a free one).",
          }),
        ),
      );
      server.listen(opts.localPort, bindHost, () => step.resolve());
    });
  } catch (err) {
    await close();
    throw err;
  }
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : opts.localPort;
  return { port, close };
}

export interface HttpProxyOptions {
  session: HostSession;
  destHost: string;
  destPort: number;
  localPort: number;
  bindHost?: string;
  /** Added to every request that does not carry the header itself (e.g. the server's API key). */
  headers?: Record<string, string>;
  forwardTimeoutMs?: number;
}

/**
 * A local HTTP proxy to a server reachable from the host: each request goes through its own SSH
 * channel, with `headers` injected, and the response (SSE included) streams back as it arrives.
 */
export async function startHttpProxy(opts: HttpProxyOptions): Promise<LocalForward> {
  const bindHost = opts.bindHost ?? "127.0.0.1";
  const open = new Set<Duplex>();
  const server = createHttpServer((req, res) => {
    opts.session.forwardOut(opts.destHost, opts.destPort, { timeoutMs: opts.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS }).then(
      (channel) => {
        open.add(channel);
        channel.once("close", () => open.delete(channel));
        channel.on("error", () => channel.destroy());
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && k !== "connection") headers[k] = v;
        for (const [k, v] of Object.entries(opts.headers ?? {})) if (headers[k.toLowerCase()] === undefined) headers[k.toLowerCase()] = v;
        headers.connection = "close";
        const upstream = httpRequest({
          method: req.method,
          path: req.url,
          headers,
          createConnection: () => asSocketLike(channel),
        });
        upstream.on("response", (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        });
        upstream.on("error", (err) => {
          if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
          res.end(`tpu-deploy proxy: ${err.message}\n`);
        });
        req.pipe(upstream);
        res.once("close", () => channel.destroy());
      },
      (err: unknown) => {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end(`tpu-deploy proxy: ${errorMessage(err)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (cause: Error) =>
      reject(
        new SshError({
          host: opts.session.host,
          stage: "forward",
          cause,
          message: `cannot listen on ${bindHost}:${opts.localPort}: ${cause.message}`,
          hint: "Another program may use that port; pick another local port (0 picks a free one).",
        }),
      ),
    );
    server.listen(opts.localPort, bindHost, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : opts.localPort;
  return {
    port,
    close: async () => {
      for (const s of open) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
