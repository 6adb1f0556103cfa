// The local proxy against real HTTP servers on 127.0.0.1 standing in for replicas' rank 0 servers: each
// upstream's open() is a TCP connection here, where the product opens an SSH channel.
import { execFileSync } from "node:child_process";
import { lstat, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { httpProbe } from "../../src/adapters/http-proxy/exchange.js";
import type { PoolEvent, Upstream } from "../../src/adapters/http-proxy/pool.js";
import { type HttpProxy, type HttpProxyOptions, startHttpProxy } from "../../src/adapters/http-proxy/proxy.js";

const KEY = "sk-proxy-test-0123456789";
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

interface Replica {
  id: string;
  port: number;
  seen: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[];
  /** Connections opened for requests (probes excluded). */
  opens: number;
  upstream: Upstream;
  refuse(): Promise<void>;
  restore(): Promise<void>;
}

async function replica(id: string, handler: Handler = json({ from: "" })): Promise<Replica> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      if (req.url !== "/health") r.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (req.url === "/health") res.end();
      else handler(req, res, body);
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const a = server.address();
  if (typeof a !== "object" || a === null) throw new Error("no address");
  const dial = (): Promise<Duplex> =>
    new Promise((resolve, reject) => {
      const s = connect(a.port, "127.0.0.1");
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    });
  const r: Replica = {
    id,
    port: a.port,
    seen: [],
    opens: 0,
    upstream: {
      id,
      open: () => {
        r.opens++;
        return dial();
      },
      probe: (signal) => httpProbe(dial, "/health", signal),
    },
    // Stops listening (new connections are refused); connections already open go on.
    refuse: async () => {
      server.close();
      await until(() => !server.listening);
    },
    restore: () => new Promise<void>((resolve) => server.listen(a.port, "127.0.0.1", resolve)),
  };
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    if (server.listening) await r.refuse();
  });
  return r;
}

function json(payload: Record<string, unknown>, extra: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", ...extra });
    res.end(JSON.stringify(payload));
  };
}

async function proxy(upstreams: Upstream[], over: Partial<HttpProxyOptions> = {}): Promise<HttpProxy & { events: PoolEvent[] }> {
  const events: PoolEvent[] = [];
  const p = await startHttpProxy({
    upstreams,
    listen: { port: 0 },
    headers: { authorization: `Bearer ${KEY}` },
    secrets: [KEY],
    probeIntervalMs: 100,
    healthyProbeIntervalMs: 60_000,
    probeTimeoutMs: 500,
    onEvent: (e) => events.push(e),
    ...over,
  });
  cleanups.push(() => p.close());
  return Object.assign(p, { events });
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function send(
  p: { port?: number } | { socketPath: string },
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const where = "socketPath" in p ? { socketPath: p.socketPath } : { host: "127.0.0.1", port: p.port };
    const req = request(
      { ...where, agent: false, method: opts.method ?? "GET", path: opts.path ?? "/v1/models", headers: opts.headers ?? {} },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

async function until(what: () => boolean, ms = 5_000): Promise<void> {
  const t0 = Date.now();
  while (!what()) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const corsKeys = (h: IncomingHttpHeaders) => Object.keys(h).filter((k) => k.startsWith("access-control-"));

describe("security: who may use the proxy", () => {
  it("refuses a foreign Host with 403 before forwarding; local hosts pass, [::1] with a port too", async () => {
    const a = await replica("a");
    const p = await proxy([a.upstream]);
    for (const host of ["evil.example", "evil.example:80", "localhost.evil.example", `127.0.0.1.nip.io:${p.port}`, "::1"]) {
      const r = await send(p, { headers: { host } });
      expect(r.status, host).toBe(403);
      expect(r.body).toMatch(/Host/);
    }
    expect(a.seen).toHaveLength(0);
    for (const host of ["localhost", `localhost:${p.port}`, `127.0.0.1:${p.port}`, `[::1]:${p.port}`, "[::1]"]) {
      expect((await send(p, { headers: { host } })).status, host).toBe(200);
    }
  });

  it("refuses a foreign Origin behind a local Host, and another site's request without one", async () => {
    const a = await replica("a");
    const p = await proxy([a.upstream]);
    for (const origin of ["http://evil.example", "null", `http://localhost.evil.example:${p.port}`]) {
      expect((await send(p, { headers: { origin } })).status, origin).toBe(403);
    }
    expect((await send(p, { headers: { "sec-fetch-site": "cross-site" } })).status).toBe(403);
    expect(a.seen).toHaveLength(0);
    expect((await send(p, { headers: { origin: "http://localhost:3000" } })).status).toBe(200);
  });

  it("refuses browser preflights with 403, even from a local page", async () => {
    const a = await replica("a");
    const p = await proxy([a.upstream]);
    const r = await send(p, {
      method: "OPTIONS",
      path: "/v1/chat/completions",
      headers: { origin: `http://127.0.0.1:${p.port}`, "access-control-request-method": "POST" },
    });
    expect(r.status).toBe(403);
    expect(corsKeys(r.headers)).toEqual([]);
    expect(a.seen).toHaveLength(0);
  });

  it("drops every Access-Control-* header the server sends", async () => {
    const grants = { "access-control-allow-origin": "*", "access-control-allow-credentials": "true", "access-control-allow-headers": "*" };
    const a = await replica("a", json({ ok: true }, { ...grants, "x-kept": "yes" }));
    const p = await proxy([a.upstream]);
    const r = await send(p, { headers: { origin: "http://localhost:3000" } });
    expect(r.status).toBe(200);
    expect(corsKeys(r.headers)).toEqual([]);
    expect(r.headers["x-kept"]).toBe("yes");
  });

  it("adds the key to requests that lack it, keeps the client's own, and redacts it in bodies and headers", async () => {
    const echo: Handler = (req, res) => {
      res.writeHead(200, { "content-type": "application/json", "x-echo": `${req.headers.authorization}` });
      res.end(JSON.stringify({ api_key: KEY, args: `ServerArgs(api_key='${KEY}')`, seen: req.headers.authorization }));
    };
    const a = await replica("a", echo);
    const p = await proxy([a.upstream]);
    const r = await send(p, { path: "/get_server_info" });
    expect(a.seen[0]?.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(a.seen[0]?.headers["accept-encoding"]).toBe("identity");
    expect(r.body).not.toContain(KEY);
    expect(JSON.parse(r.body)).toEqual({ api_key: "[REDACTED]", args: "ServerArgs(api_key='[REDACTED]')", seen: "Bearer [REDACTED]" });
    expect(r.headers["x-echo"]).toBe("Bearer [REDACTED]");
    await send(p, { headers: { authorization: "Bearer client-own-key" } });
    expect(a.seen[1]?.headers.authorization).toBe("Bearer client-own-key");
  });

  it("refuses to pass on a compressed body it cannot check", async () => {
    const a = await replica("a", (_req, res) => {
      res.writeHead(200, { "content-encoding": "gzip" });
      res.end(Buffer.from([0x1f, 0x8b, 0x08]));
    });
    const p = await proxy([a.upstream]);
    const r = await send(p);
    expect(r.status).toBe(502);
    expect(r.body).toMatch(/cannot check for secrets/);
  });

  it("refuses a secret too short to redact before it listens", async () => {
    const a = await replica("a");
    await expect(startHttpProxy({ upstreams: [a.upstream], listen: { port: 0 }, secrets: ["short"] })).rejects.toThrow(/at least 8/);
  });
});

describe("--unix-socket", () => {
  async function dir(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), "tpd-proxy-"));
    cleanups.push(() => rm(d, { recursive: true, force: true }));
    return d;
  }

  it("listens on a 0600 socket, serves through it, and removes it on close", async () => {
    const a = await replica("a");
    const path = join(await dir(), "p.sock");
    const p = await startHttpProxy({ upstreams: [a.upstream], listen: { socketPath: path }, secrets: [KEY] });
    const st = await lstat(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(p.socketPath).toBe(path);
    expect((await send({ socketPath: path }, { headers: { host: "localhost" } })).status).toBe(200);
    await p.close();
    await expect(lstat(path)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("refuses a path that is not a socket, and a socket another process serves; replaces a stale one", async () => {
    const a = await replica("a");
    const d = await dir();
    await writeFile(join(d, "file"), "keep\n");
    await expect(startHttpProxy({ upstreams: [a.upstream], listen: { socketPath: join(d, "file") } })).rejects.toThrow(/not a socket/);
    const live = createNetServer();
    await new Promise<void>((resolve) => live.listen(join(d, "live"), resolve));
    cleanups.push(() => new Promise<void>((resolve) => live.close(() => resolve())));
    await expect(startHttpProxy({ upstreams: [a.upstream], listen: { socketPath: join(d, "live") } })).rejects.toThrow(/in use/);
    // A killed proxy leaves its socket file behind; nobody answers on it.
    execFileSync("python3", ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", join(d, "stale")]);
    const staleIno = (await lstat(join(d, "stale"))).ino;
    const p = await startHttpProxy({ upstreams: [a.upstream], listen: { socketPath: join(d, "stale") } });
    cleanups.push(() => p.close());
    expect((await lstat(join(d, "stale"))).ino).not.toBe(staleIno);
  });
});

describe("replicas", () => {
  /** Holds /slow requests until released; answers everything else at once, naming the replica. */
  function holding(id: string) {
    const held: ServerResponse[] = [];
    const handler: Handler = (req, res) => {
      if (req.url === "/slow") held.push(res);
      else json({ from: id })(req, res, "");
    };
    return {
      handler,
      held,
      release: () => {
        for (const res of held.splice(0)) json({ from: id })(undefined as never, res, "");
      },
    };
  }

  it("sends each request to the upstream with the fewest outstanding requests, ties in turn", async () => {
    const ha = holding("a");
    const hb = holding("b");
    const a = await replica("a", ha.handler);
    const b = await replica("b", hb.handler);
    const p = await proxy([a.upstream, b.upstream]);
    const slow = send(p, { path: "/slow" });
    await until(() => ha.held.length + hb.held.length === 1);
    const busy = ha.held.length === 1 ? "a" : "b";
    expect(p.stats()).toContainEqual(expect.objectContaining({ id: busy, healthy: true, outstanding: 1 }));
    // Turn alone would alternate; the busy upstream gets none while the other has fewer outstanding.
    const froms: string[] = [];
    for (let i = 0; i < 4; i++) froms.push((JSON.parse((await send(p)).body) as { from: string }).from);
    expect(froms).toEqual(Array(4).fill(busy === "a" ? "b" : "a"));
    ha.release();
    hb.release();
    expect((await slow).status).toBe(200);
    expect(p.stats().map((s) => s.outstanding)).toEqual([0, 0]);
    const after = new Set<string>();
    for (let i = 0; i < 2; i++) after.add((JSON.parse((await send(p)).body) as { from: string }).from);
    expect(after).toEqual(new Set(["a", "b"]));
  });

  it("takes out an upstream that refuses connections, sends nothing to it, and takes it back once a probe answers", async () => {
    const a = await replica("a", json({ from: "a" }));
    const b = await replica("b", json({ from: "b" }));
    const p = await proxy([a.upstream, b.upstream]);
    await a.refuse();
    // Whichever request met the refusal was sent again to b: the client never sees it.
    for (let i = 0; i < 6; i++) expect(JSON.parse((await send(p)).body)).toEqual({ from: "b" });
    expect(a.opens).toBe(1);
    expect(p.events).toEqual([{ kind: "out", id: "a", reason: expect.stringMatching(/ECONNREFUSED/) }]);
    expect(p.stats()).toContainEqual(expect.objectContaining({ id: "a", healthy: false, outstanding: 0 }));
    await a.restore();
    await until(() => p.events.length === 2);
    expect(p.events[1]).toEqual({ kind: "back", id: "a" });
    const froms = new Set<string>();
    for (let i = 0; i < 4; i++) froms.add((JSON.parse((await send(p)).body) as { from: string }).from);
    expect(froms).toEqual(new Set(["a", "b"]));
  });

  it("takes out an upstream that fails its probe", async () => {
    const a = await replica("a");
    const b = await replica("b");
    const p = await proxy([a.upstream, b.upstream], { healthyProbeIntervalMs: 100 });
    await a.refuse();
    await until(() => p.events.length === 1);
    expect(p.events[0]).toEqual({ kind: "out", id: "a", reason: "probe failed" });
    expect(a.opens).toBe(0);
  });

  it("retries once, on another upstream, a request that failed before any answer byte, with its body", async () => {
    // a reads the whole request, then drops the connection without a byte of answer.
    const a = await replica("a", (req) => req.socket.destroy());
    const b = await replica("b", (_req, res, body) => json({ from: "b", body })(_req, res, body));
    const p = await proxy([a.upstream, b.upstream]);
    const body = JSON.stringify({ messages: [{ role: "user", content: "hi" }] });
    const r = await send(p, { method: "POST", path: "/v1/chat/completions", headers: { "content-type": "application/json" }, body });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ from: "b", body });
    expect(a.seen.map((s) => s.body)).toEqual([body]);
    expect(b.seen[0]).toMatchObject({ method: "POST", url: "/v1/chat/completions", body });
  });

  it("retries only once, and not a body too large to have been kept", async () => {
    const drop: Handler = (req) => req.socket.destroy();
    const [a, b, c] = [await replica("a", drop), await replica("b", drop), await replica("c", drop)];
    const p = await proxy([a.upstream, b.upstream, c.upstream]);
    const r = await send(p, { method: "POST", path: "/generate", body: "{}" });
    expect(r.status).toBe(502);
    expect(r.body).toMatch(/no upstream answered/);
    expect(a.opens + b.opens + c.opens).toBe(2);

    const d = await replica("d", drop);
    const e = await replica("e", json({ from: "e" }));
    const q = await proxy([d.upstream, e.upstream], { maxBufferedBody: 1024 });
    const big = await send(q, { method: "POST", path: "/generate", body: "x".repeat(64 * 1024) });
    expect(big.status).toBe(502);
    expect(d.seen[0]?.body).toHaveLength(64 * 1024);
    expect(e.seen).toHaveLength(0);
  });

  it("does not retry once the answer began: the client sees the cut", async () => {
    const a = await replica("a", (req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: 1\n\n", () => setTimeout(() => req.socket.destroy(), 50));
    });
    const b = await replica("b");
    const p = await proxy([a.upstream, b.upstream]);
    await expect(send(p, { path: "/generate" })).rejects.toThrow(/aborted|socket hang up|ECONNRESET/);
    expect(b.seen).toHaveLength(0);
  });

  it("streams SSE chunk by chunk from the upstream that started it, redacting a key split across chunks", async () => {
    const next: (() => void)[] = [];
    const a = await replica("a", (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const events = ["data: 1\n\n", `data: ${KEY.slice(0, 10)}`, `${KEY.slice(10)}\n\n`, "data: [DONE]\n\n"];
      const write = (i: number): void => {
        if (i === events.length) {
          res.end();
          return;
        }
        res.write(events[i]);
        next.push(() => write(i + 1));
      };
      write(0);
    });
    const b = await replica("b", json({ from: "b" }));
    const p = await proxy([a.upstream, b.upstream]);
    const got: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: p.port, agent: false, path: "/generate" }, (res) => {
        res.setEncoding("utf8");
        res.on("data", (c: string) => got.push(c));
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.end();
    });
    // The first event arrives before a sends the second: nothing waits for the end of the body.
    await until(() => got.join("").includes("data: 1\n\n"));
    expect(next).toHaveLength(1);
    // a stops taking new connections and b takes the new requests; the stream goes on from a.
    await a.refuse();
    expect(JSON.parse((await send(p)).body)).toEqual({ from: "b" });
    while (next.length > 0) {
      next.shift()?.();
      await new Promise((r) => setTimeout(r, 30));
    }
    await done;
    const text = got.join("");
    expect(text).toBe("data: 1\n\ndata: [REDACTED]\n\ndata: [DONE]\n\n");
    expect(a.seen).toHaveLength(1);
  });

  it("with one upstream, behaves as a plain tunnel: a refused connection is a 502, and the next request tries again", async () => {
    const a = await replica("a", json({ from: "a" }));
    const p = await proxy([a.upstream]);
    await a.refuse();
    const r = await send(p);
    expect(r.status).toBe(502);
    expect(r.body).toMatch(/ECONNREFUSED/);
    await a.restore();
    expect((await send(p)).status).toBe(200);
  });
});

describe("kept-alive upstream channels", () => {
  it("sends request after request over one channel (no new channel, no new connection to the server)", async () => {
    const a = await replica("a", json({ from: "a" }));
    const p = await proxy([a.upstream]);
    for (let i = 0; i < 5; i++) expect((await send(p)).status).toBe(200);
    expect(a.seen).toHaveLength(5);
    expect(a.opens).toBe(1);
    // The proxy no longer asks the server to close after each answer.
    expect(a.seen.map((s) => s.headers.connection)).toEqual(Array(5).fill("keep-alive"));
  });

  it("drops a channel left idle (below uvicorn's 5 s keep-alive), and opens a new one for the next request", async () => {
    const a = await replica("a", json({ from: "a" }));
    const p = await proxy([a.upstream]);
    expect((await send(p)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2_600));
    expect((await send(p)).status).toBe(200);
    expect(a.opens).toBe(2);
  });

  it("a kept-alive channel the server closes just as it is reused: the request goes again, and the upstream stays in", async () => {
    // Answers the first request of each connection with keep-alive, then drops the connection at its
    // second request without a byte: what a server closing an idle connection looks like from the reuse side.
    const served = new WeakSet<object>();
    const a = await replica("a", (req, res) => {
      if (served.has(req.socket)) {
        req.socket.destroy();
        return;
      }
      served.add(req.socket);
      json({ from: "a" })(req, res, "");
    });
    const p = await proxy([a.upstream]);
    expect((await send(p)).status).toBe(200);
    const r = await send(p, { method: "POST", path: "/generate", body: "{}" });
    expect(r.status).toBe(200);
    expect(a.opens).toBe(2);
    expect(p.events).toEqual([]);
    expect(p.stats()).toEqual([expect.objectContaining({ id: "a", healthy: true, outstanding: 0 })]);
  });
});
