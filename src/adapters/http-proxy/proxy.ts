// The local HTTP proxy in front of a deployment's replicas. It adds the server's API key, so it answers
// local clients only (core/local-request.ts), never hands a browser a CORS grant, and redacts every
// secret from what it returns: sglang-jax echoes its key (docs/upstream/hostkeys-sglang-facts.md §B1, §B5).
// Requests go to the replica with the fewest outstanding ones; one that fails before its answer began
// is sent once more to another replica, and a streamed answer stays on the replica that started it.
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import { pipeline, type Readable, Transform } from "node:stream";
import { checkLocalRequest } from "../../core/local-request.js";
import { byteStreamRedactor, redactor } from "../../core/redact.js";
import { ChannelAgent, type Exchange, exchange, type UpstreamRequest } from "./exchange.js";
import { type ListenOn, listenOn } from "./listen.js";
import { type PoolEvent, type Upstream, UpstreamPool, type UpstreamStat } from "./pool.js";

export interface HttpProxyOptions {
  upstreams: readonly Upstream[];
  listen: ListenOn;
  /** Added to every request that does not carry the header itself (the server's API key). */
  headers?: Readonly<Record<string, string>>;
  /** Values redacted from every answer (each at least MIN_SECRET_LENGTH characters). */
  secrets?: readonly string[];
  onEvent?: (event: PoolEvent) => void;
  probeIntervalMs?: number;
  healthyProbeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Request bodies up to this size are buffered, so the request can be retried elsewhere. */
  maxBufferedBody?: number;
}

export interface HttpProxy {
  url: string;
  port?: number;
  socketPath?: string;
  stats(): UpstreamStat[];
  close(): Promise<void>;
}

// RFC 9110 §7.6.1 hop-by-hop fields, plus Expect: the body is read here before it is sent on.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"]);

export async function startHttpProxy(opts: HttpProxyOptions): Promise<HttpProxy> {
  const secrets = opts.secrets ?? [];
  const redactText = redactor(secrets); // refuses secrets too short to redact, before anything listens
  const maxBuffered = opts.maxBufferedBody ?? 1024 * 1024;
  const pool = new UpstreamPool(opts.upstreams, {
    probeIntervalMs: opts.probeIntervalMs ?? 3_000,
    healthyProbeIntervalMs: opts.healthyProbeIntervalMs ?? 15_000,
    probeTimeoutMs: opts.probeTimeoutMs ?? 2_000,
    onEvent: opts.onEvent,
  });
  const inFlight = new Set<Exchange>();
  // One keep-alive agent per upstream: its idle channels are reused by the next request to it.
  const agents = new Map<string, ChannelAgent>();
  const agentFor = (u: Upstream): ChannelAgent => {
    let agent = agents.get(u.id);
    if (!agent) {
      agent = new ChannelAgent(() => u.open());
      agents.set(u.id, agent);
    }
    return agent;
  };

  const answer = (res: ServerResponse, status: number, message: string, close = false): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers: OutgoingHttpHeaders = { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" };
    // A refused request's body is never read: close the connection instead of draining it.
    if (close) headers.connection = "close";
    res.writeHead(status, headers);
    res.end(`tpu-deploy proxy: ${redactText(message)}\n`);
  };

  const relay = (up: IncomingMessage, res: ServerResponse, done: (err?: Error | null) => void): void => {
    const encoding = up.headers["content-encoding"];
    if (encoding !== undefined && encoding !== "identity") {
      // Asked for identity; a compressed body could carry a secret past the redactor, so it is not passed on.
      up.resume();
      done();
      answer(res, 502, `the server sent a ${encoding} body, which the proxy cannot check for secrets`);
      return;
    }
    res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up.headers, redactText));
    const redact = byteStreamRedactor(secrets);
    const redacting = new Transform({
      transform(chunk: Buffer, _enc, callback) {
        const out = redact.push(chunk);
        if (out.length > 0) this.push(out);
        callback();
      },
      flush(callback) {
        callback(null, redact.end());
      },
    });
    // Each chunk is written as it comes (SSE streams token by token), less a short held-back tail.
    pipeline(up, redacting, res, (err) => done(err));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const verdict = checkLocalRequest({
      method: req.method ?? "GET",
      host: req.headers.host,
      origin: req.headers.origin,
      accessControlRequestMethod: one(req.headers["access-control-request-method"]),
      secFetchSite: one(req.headers["sec-fetch-site"]),
    });
    if (!verdict.ok) {
      answer(res, 403, `forbidden: ${verdict.reason}`, true);
      return;
    }
    let clientGone = false;
    res.once("close", () => {
      if (!res.writableFinished) clientGone = true;
    });
    let body: UpstreamRequest["body"];
    try {
      body = await readBody(req, maxBuffered);
    } catch {
      res.destroy();
      return;
    }
    const tried = new Set<string>();
    let lastError = "no upstream";
    let staleRetried = false;
    for (let upstream = pool.pick(tried); upstream && !clientGone; upstream = pool.pick(tried)) {
      tried.add(upstream.id);
      const release = pool.begin(upstream.id);
      let ex: Exchange | undefined;
      try {
        const current = exchange(agentFor(upstream), {
          method: req.method ?? "GET",
          path: req.url ?? "/",
          headers: upstreamHeaders(req, body, opts.headers),
          body,
        });
        ex = current;
        inFlight.add(current);
        let completed = false;
        res.once("close", () => {
          if (!completed) current.abort();
        });
        const up = await current.response;
        pool.answered(upstream.id);
        relay(up, res, (err) => {
          // A completed answer leaves its channel to the agent for the next request; anything else ends it.
          completed = !err;
          release();
          if (err) current.abort();
          inFlight.delete(current);
        });
        return;
      } catch (err) {
        release();
        if (ex) {
          ex.abort();
          inFlight.delete(ex);
        }
        if (clientGone) return; // the client hung up: not the upstream's fault
        // A kept-alive channel the server closed just as it was reused says nothing about the server: once,
        // the same request goes again (to whichever upstream the pool picks), without counting a failure.
        if (ex?.reused() && Buffer.isBuffer(body) && !staleRetried) {
          staleRetried = true;
          tried.delete(upstream.id);
          continue;
        }
        const why = err instanceof Error ? err.message : String(err);
        lastError = `${upstream.id}: ${why}`;
        pool.fail(upstream.id, why);
        // Once more, elsewhere, when nothing of the answer was sent and the body can be sent again.
        if (!Buffer.isBuffer(body) || tried.size >= 2) break;
      }
    }
    if (!clientGone) answer(res, 502, `no upstream answered: ${lastError}`);
  };

  const server = createServer((req, res) => void handle(req, res));
  let listening: Awaited<ReturnType<typeof listenOn>>;
  try {
    listening = await listenOn(server, opts.listen);
  } catch (err) {
    pool.close();
    throw err;
  }
  return {
    url: listening.url,
    ...(listening.port === undefined ? {} : { port: listening.port }),
    ...(listening.socketPath === undefined ? {} : { socketPath: listening.socketPath }),
    stats: () => pool.stats(),
    close: async () => {
      pool.close();
      for (const ex of inFlight) ex.abort();
      for (const agent of agents.values()) agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await listening.cleanup();
    },
  };
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(", ") : v;
}

/** The body, buffered up to `limit` bytes; beyond that, what was read plus the rest as a stream. */
function readBody(req: IncomingMessage, limit: number): Promise<UpstreamRequest["body"]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) {
        req.pause();
        stop();
        resolve({ head: chunks, rest: req as Readable });
      }
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      stop();
      reject(err);
    };
    const onClose = (): void => {
      if (!req.complete) onError(new Error("the client closed the connection"));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

function connectionNamed(headers: IncomingHttpHeaders): Set<string> {
  return new Set(
    String(headers.connection ?? "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim()),
  );
}

function upstreamHeaders(
  req: IncomingMessage,
  body: UpstreamRequest["body"],
  inject: Readonly<Record<string, string>> = {},
): OutgoingHttpHeaders {
  const named = connectionNamed(req.headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k) || k === "content-length" || k === "accept-encoding") continue;
    out[k] = v;
  }
  for (const [k, v] of Object.entries(inject)) if (out[k.toLowerCase()] === undefined) out[k.toLowerCase()] = v;
  const hadBody = req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
  if (Buffer.isBuffer(body)) {
    if (hadBody || body.length > 0) out["content-length"] = body.length;
  } else if (req.headers["content-length"] !== undefined) {
    out["content-length"] = req.headers["content-length"];
  } else {
    out["transfer-encoding"] = "chunked";
  }
  // Plain bodies only, so the redactor sees the bytes the client will read.
  out["accept-encoding"] = "identity";
  return out;
}

/** The upstream's headers, less hop-by-hop ones, its length (redaction changes it) and every CORS grant. */
function responseHeaders(headers: IncomingHttpHeaders, redactText: (text: string) => string): OutgoingHttpHeaders {
  const named = connectionNamed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k) || k === "content-length" || k.startsWith("access-control-")) continue;
    out[k] = Array.isArray(v) ? v.map(redactText) : redactText(v);
  }
  return out;
}
