// `tpu-deploy proxy` on a real (simulated) deployment with an API key: the local endpoint refuses what a
// web page or a DNS-rebinding attacker would send, and what it answers never carries the key, although
// sglang-jax itself echoes the key in /get_server_info and allows every CORS origin
// (docs/upstream/hostkeys-sglang-facts.md §B1, §B5).
import { lstat, mkdtemp, writeFile } from "node:fs/promises";
import { type IncomingHttpHeaders, request } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2E, startE2E } from "./helpers.js";

const NAME = "guarded";
const KEY = "sk-e2e-proxy-key-5f0c2b9a71";
const HF = "hf_e2eProxyToken0123456789";

let e2e: E2E;
let port = 0;
let stopProxy: () => Promise<number>;

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function send(
  target: { port: number } | { socketPath: string },
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const where = "port" in target ? { host: "127.0.0.1", port: target.port } : { socketPath: target.socketPath };
    const req = request(
      { ...where, method: opts.method ?? "GET", path: opts.path, headers: opts.headers ?? {}, timeout: 30_000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Runs `tpu-deploy proxy` in-process until the returned stop() (Ctrl-C); resolves once it printed its first stdout line. */
async function startProxy(args: string[]): Promise<{ line: string; stop: () => Promise<number> }> {
  const ac = new AbortController();
  let line: string | undefined;
  let run: Promise<{ code: number; stderr: string }> | undefined;
  await new Promise<void>((resolve, reject) => {
    run = e2e.cli(["proxy", NAME, ...args], {
      signal: ac.signal,
      env: { SGLANG_API_KEY: KEY, HF_TOKEN: HF },
      onStdout: (text) => {
        const m = /^(.+)\n/.exec(text);
        if (m?.[1] !== undefined && line === undefined) {
          line = m[1];
          resolve();
        }
      },
    });
    run.then((r) => reject(new Error(`proxy exited (${r.code}) before printing where it listens:\n${r.stderr}`)), reject);
  });
  if (line === undefined || run === undefined) throw new Error("unreachable");
  const done = run;
  return {
    line,
    stop: async () => {
      ac.abort();
      return (await done).code;
    },
  };
}

beforeAll(async () => {
  e2e = await startE2E();
  const up = await e2e.cli(["up", "-n", NAME, "--nodes", "1", "--secret", "HF_TOKEN", "--api-key-secret", "SGLANG_API_KEY"], {
    env: { SGLANG_API_KEY: KEY, HF_TOKEN: HF },
  });
  if (up.code !== 0) throw new Error(`up failed (${up.code}):\n${up.stderr}`);
  const p = await startProxy(["--local-port", "0"]);
  const m = /^http:\/\/127\.0\.0\.1:(\d+)$/.exec(p.line);
  if (!m?.[1]) throw new Error(`unexpected proxy output ${p.line}`);
  port = Number(m[1]);
  stopProxy = p.stop;
});

afterAll(async () => {
  if (stopProxy) expect(await stopProxy()).toBe(0);
  if (e2e) {
    expect((await e2e.cli(["down", NAME, "-y"])).code).toBe(0);
    await e2e.stop();
  }
});

describe("tpu-deploy proxy on a deployment with an API key", () => {
  it("serves a local client, adding the key", async () => {
    const r = await send({ port }, { path: "/v1/models", headers: { host: `127.0.0.1:${port}` } });
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as { data: { id: string }[] }).data[0]?.id).toBe("Qwen/Qwen3-8B");
    for (const host of [`localhost:${port}`, `[::1]:${port}`, "localhost"]) {
      expect((await send({ port }, { path: "/v1/models", headers: { host } })).status, host).toBe(200);
    }
  });

  it("refuses a foreign Host (DNS rebinding) with 403 before forwarding", async () => {
    for (const host of ["evil.example", `evil.example:${port}`, "localhost.evil.example", "127.0.0.1.nip.io"]) {
      const r = await send({ port }, { path: "/get_server_info", headers: { host } });
      expect(r.status, host).toBe(403);
      expect(r.body).not.toContain(KEY);
    }
  });

  it("refuses a foreign Origin (a web page's fetch) and browser preflights with 403", async () => {
    const page = { host: `127.0.0.1:${port}`, origin: "https://evil.example" };
    const r = await send({ port }, { path: "/get_server_info", headers: page });
    expect(r.status).toBe(403);
    expect(r.body).not.toContain(KEY);
    expect((await send({ port }, { path: "/v1/models", headers: { ...page, origin: "null" } })).status).toBe(403);
    const preflight = await send(
      { port },
      {
        method: "OPTIONS",
        path: "/v1/chat/completions",
        headers: { ...page, origin: `http://127.0.0.1:${port}`, "access-control-request-method": "POST" },
      },
    );
    expect(preflight.status).toBe(403);
    expect(Object.keys(preflight.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
  });

  it("answers /get_server_info without the key or any secret, and without CORS grants", async () => {
    // A local page's Origin is allowed, but the server's CORS answer (allow every origin) is dropped.
    const r = await send(
      { port },
      { path: "/get_server_info", headers: { host: `localhost:${port}`, origin: `http://localhost:${port}` } },
    );
    expect(r.status).toBe(200);
    expect(r.body).not.toContain(KEY);
    expect(r.body).not.toContain(HF);
    const info = JSON.parse(r.body) as Record<string, unknown>;
    expect(info.api_key).toBe("[REDACTED]");
    expect(info.nnodes).toBe(1);
    expect(Object.keys(r.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
  });

  it("--unix-socket: a 0600 socket instead of a port, removed on exit; an existing file is refused", async () => {
    const dir = await mkdtemp(join(e2e.sim.home, "sock-"));
    const socketPath = join(dir, "proxy.sock");
    const p = await startProxy(["--unix-socket", socketPath]);
    expect(p.line).toContain(socketPath);
    const st = await lstat(socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    const r = await send({ socketPath }, { path: "/get_server_info", headers: { host: "localhost" } });
    expect(r.status).toBe(200);
    expect(r.body).not.toContain(KEY);
    expect(await p.stop()).toBe(0);
    await expect(lstat(socketPath)).rejects.toMatchObject({ code: "ENOENT" });

    const file = join(dir, "not-a-socket");
    await writeFile(file, "keep me\n");
    const refused = await e2e.cli(["proxy", NAME, "--unix-socket", file], { env: { SGLANG_API_KEY: KEY, HF_TOKEN: HF } });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/not a socket/);
    expect((await lstat(file)).isFile()).toBe(true);
  });
});
