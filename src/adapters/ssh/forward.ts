// A local port that leads through a host's SSH connection (a raw TCP forward). The HTTP proxy in front of
// a deployment's servers is src/adapters/http-proxy/; it opens its channels with HostSession.forwardOut.
import { createServer, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { SshError } from "../../errors.js";
import { DEFAULT_FORWARD_TIMEOUT_MS, type HostSession } from "./session.js";
import { runStep } from "./step.js";

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
