// The sglang-jax double must be as strict as the real server and louder where the real one hangs:
// argparse exits, the multi-host rendezvous (no HTTP listener before every rank joined and loaded),
// rank/address/topology checks that stop every member, the API key, faults, and the death of a rank.
// Every rank runs on loopback with its own 127.0.0.x "internal IP" and its own metadata stub.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, request, type Server } from "node:http";
import { connect, createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const SIM_DIR = fileURLToPath(new URL(".", import.meta.url));
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
const MODEL = "Qwen/Qwen3-8B";

interface Identity {
  worker: number;
  ip: string;
  accel?: string; // attributes/accelerator-type; absent on TPU7x GCE VMs
  machineType?: string;
  sliceId?: string;
  name?: string; // metadata instance/name, e.g. t1v-n-<node hash>-w-<worker> on Cloud TPU VMs
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Rank {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<Exit>;
  isRunning: () => boolean;
}

let simRoot = "";
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(async () => {
  simRoot = await mkdtemp(join(tmpdir(), "tpd-sgl-double-"));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  await rm(simRoot, { recursive: true, force: true });
});

async function setFaults(server: Record<string, unknown>): Promise<void> {
  await writeFile(join(simRoot, "faults.json"), JSON.stringify({ server }));
}

async function startMetadata(id: Identity): Promise<string> {
  const values: Record<string, string> = {
    "attributes/agent-worker-number": String(id.worker),
    "network-interfaces/0/ip": id.ip,
    "network-interfaces/0/access-configs/0/external-ip": `198.18.7.${id.worker + 10}`,
    zone: "projects/123456789012/zones/us-east5-b",
  };
  if (id.accel !== undefined) values["attributes/accelerator-type"] = id.accel;
  if (id.machineType !== undefined) values["machine-type"] = `projects/123456789012/machineTypes/${id.machineType}`;
  if (id.sliceId !== undefined) values["attributes/slice-id"] = id.sliceId;
  if (id.name !== undefined) values.name = id.name;
  const server: Server = createServer((req, res) => {
    const prefix = "/computeMetadata/v1/instance/";
    const path = (req.url ?? "").startsWith(prefix) ? (req.url ?? "").slice(prefix.length) : "";
    const value = values[path];
    if (req.headers["metadata-flavor"] !== "Google" || value === undefined) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "Content-Type": "application/text", "Metadata-Flavor": "Google" }).end(value);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("metadata stub has no port");
  return `127.0.0.1:${addr.port}`;
}

function spawnDouble(args: string[], metadataHost?: string): Rank {
  const env: NodeJS.ProcessEnv = { ...process.env, TPD_SIM_ROOT: simRoot, PYTHONDONTWRITEBYTECODE: "1" };
  delete env.GCE_METADATA_HOST;
  delete env.GCE_METADATA_IP;
  delete env.JAX_PLATFORMS;
  // JAX and libtpu find the metadata server at $GCE_METADATA_IP, else metadata.google.internal.
  if (metadataHost !== undefined) env.GCE_METADATA_IP = metadataHost;
  const proc = spawn(PYTHON, ["-u", "-m", "sgl_jax.launch_server", ...args], {
    cwd: SIM_DIR,
    env,
    detached: true, // its own process group, as tpu-deploy starts it under setsid
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  proc.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  let running = true;
  const exited = new Promise<Exit>((resolve) =>
    proc.on("exit", (code, signal) => {
      running = false;
      resolve({ code, signal });
    }),
  );
  cleanups.push(async () => {
    if (running && proc.pid !== undefined) {
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {
        // already gone
      }
      await exited;
    }
  });
  return { proc, output: () => out, exited, isRunning: () => running };
}

async function startRank(id: Identity, args: string[]): Promise<Rank> {
  return spawnDouble(args, await startMetadata(id));
}

async function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createTcpServer();
    s.once("error", () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

async function tcpConnects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(2000, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

// A base port P with P, P+5, P+6 free on 127.0.0.1 and the HTTP port free on every rank's address.
async function freePorts(hosts: string[]): Promise<{ dist: number; http: number }> {
  for (;;) {
    const dist = 20_000 + Math.floor(Math.random() * 35_000);
    const http = dist + 10;
    const checks = [dist, dist + 5, dist + 6].map((p) => canListen("127.0.0.1", p));
    checks.push(...hosts.map((h) => canListen(h, http)));
    if ((await Promise.all(checks)).every(Boolean)) return { dist, http };
  }
}

interface HttpResult {
  status: number;
  body: string;
}

function httpGet(host: string, port: number, path: string, headers: Record<string, string> = {}): Promise<HttpResult | "refused"> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, headers, timeout: 10_000 }, (res) => {
      let body = "";
      res.on("data", (b: Buffer) => (body += b.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNREFUSED" ? resolve("refused") : reject(e)));
    req.end();
  });
}

function httpRequest(
  port: number,
  path: string,
  headers: Record<string, string>,
  method = "GET",
): Promise<HttpResult & { headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, headers, timeout: 10_000 }, (res) => {
      let body = "";
      res.on("data", (b: Buffer) => (body += b.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

function httpPost(host: string, port: number, path: string, json: unknown): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(json);
    const req = request(
      { host, port, path, method: "POST", headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) } },
      (res) => {
        let body = "";
        res.on("data", (b: Buffer) => (body += b.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

async function waitFor(rank: Rank, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(rank.output())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; output:\n${rank.output()}`);
    if (!rank.isRunning() && !pattern.test(rank.output())) throw new Error(`exited before ${pattern}; output:\n${rank.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function exitWithin(rank: Rank, ms: number): Promise<Exit> {
  const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), ms));
  const r = await Promise.race([rank.exited, timer]);
  if (r === "timeout") throw new Error(`still running after ${ms} ms; output:\n${rank.output()}`);
  return r;
}

function failed(e: Exit): boolean {
  return e.signal !== null || (e.code !== null && e.code !== 0);
}

// Descendants of a rank's main process whose /proc/<pid>/cmdline starts with `title` (setproctitle's form).
function childrenTitled(rank: Rank, title: string): number[] {
  const parentOf = new Map<number, number>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      parentOf.set(Number(e), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone
    }
  }
  const root = rank.proc.pid ?? -1;
  const isDescendant = (pid: number): boolean => {
    for (let p = parentOf.get(pid); p !== undefined && p > 1; p = parentOf.get(p)) if (p === root) return true;
    return false;
  };
  return [...parentOf.keys()].filter((pid) => {
    if (!isDescendant(pid)) return false;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] === title;
    } catch {
      return false;
    }
  });
}

const v6e16 = (worker: number, sliceId?: string): Identity => ({ worker, ip: `127.0.0.${worker + 1}`, accel: "v6e-16", sliceId });

function rankArgs(rank: number, ip: string, ports: { dist: number; http: number }, extra: string[] = []): string[] {
  return ["--model-path", MODEL, "--node-rank", String(rank), "--host", ip, "--port", String(ports.http), ...extra];
}

describe("command line", () => {
  it("rejects an unknown flag and a missing --model-path with argparse's exit 2", async () => {
    const unknown = spawnDouble(["--model-path", MODEL, "--no-such-flag"]);
    expect(await unknown.exited).toEqual({ code: 2, signal: null });
    expect(unknown.output()).toContain("error: unrecognized arguments: --no-such-flag");

    const missing = spawnDouble(["--tp-size", "4"]);
    expect(await missing.exited).toEqual({ code: 2, signal: null });
    expect(missing.output()).toContain("the following arguments are required: --model-path/--model");

    const ambiguous = spawnDouble(["--model-path", MODEL, "--disaggregation", "x"]);
    expect(await ambiguous.exited).toEqual({ code: 2, signal: null });
    expect(ambiguous.output()).toContain("ambiguous option: --disaggregation");
  });

  it("takes --api-key=VALUE, and like argparse refuses a separate value that starts with '-'", async () => {
    // argparse reads `--api-key -abc` as a flag with no value (sgl_jax/srt/server_args.py is plain argparse).
    const dash = spawnDouble(["--model-path", MODEL, "--api-key", "-sk-starts-with-dash"]);
    expect(await dash.exited).toEqual({ code: 2, signal: null });
    expect(dash.output()).toContain("error: argument --api-key: expected one argument");

    await setFaults({ loadDelayMs: 0 });
    const ports = await freePorts(["127.0.0.1"]);
    const key = "-sk-starts-with-dash";
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-4" }, [
      ...rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4", `--api-key=${key}`]),
    ]);
    await waitFor(r, /fired up and ready to roll/);
    expect(await httpGet("127.0.0.1", ports.http, "/v1/models")).toMatchObject({ status: 401 });
    expect(await httpGet("127.0.0.1", ports.http, "/v1/models", { Authorization: `Bearer ${key}` })).toMatchObject({ status: 200 });
  });

  it("fails argument checks in the main process like the real one (exit 1, message)", async () => {
    const notDivisible = spawnDouble(["--model", MODEL, "--tp-size", "6", "--nnodes", "4", "--dist-init-addr", "127.0.0.1:20000"]);
    expect(await notDivisible.exited).toEqual({ code: 1, signal: null });
    expect(notDivisible.output()).toContain("ERROR --tp-size 6 is not divisible by --nnodes 4");
    expect(notDivisible.output()).toContain("AssertionError: tp_size must be divisible by number of nodes");

    const noAddr = spawnDouble(["--model", MODEL, "--tp-size", "16", "--nnodes", "4"]);
    expect(await noAddr.exited).toEqual({ code: 1, signal: null });
    expect(noAddr.output()).toContain("AttributeError: 'NoneType' object has no attribute 'split'");

    for (const addr of ["[::1]:20000", "127.0.0.1", "127.0.0.1:port"]) {
      const bad = spawnDouble(["--model", MODEL, "--tp-size", "16", "--nnodes", "4", "--dist-init-addr", addr]);
      expect(await bad.exited).toEqual({ code: 1, signal: null });
      expect(bad.output()).toMatch(/ValueError: (too many values|not enough values|invalid literal for int)/);
    }
  });
});

describe("single host", () => {
  it("serves after the load delay, with canned replies naming the model and the API key enforced", async () => {
    await setFaults({ loadDelayMs: 1500 });
    const ports = await freePorts(["127.0.0.1"]);
    const key = "sk-test-very-secret-123";
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-4" }, [
      ...rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4", "--api-key", key, "--page-size=64", "--served-model-name", "qwen"]),
    ]);
    await waitFor(r, /\[Scheduler\] Begins to run worker precompile\./);
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toBe("refused");
    await waitFor(r, /The server is fired up and ready to roll!/);
    expect(r.output()).toContain(`Uvicorn running on http://127.0.0.1:${ports.http} (Press CTRL+C to quit)`);

    expect(await httpGet("127.0.0.1", ports.http, "/health")).toEqual({ status: 200, body: "" });
    expect(await httpGet("127.0.0.1", ports.http, "/health_generate")).toEqual({ status: 200, body: "" });
    const denied = await httpGet("127.0.0.1", ports.http, "/v1/models");
    expect(denied).toEqual({ status: 401, body: JSON.stringify({ error: "Unauthorized" }) });
    expect(await httpGet("127.0.0.1", ports.http, "/v1/models", { Authorization: "Bearer wrong" })).toMatchObject({ status: 401 });
    const auth = { Authorization: `Bearer ${key}` };
    const models = await httpGet("127.0.0.1", ports.http, "/v1/models", auth);
    if (models === "refused") throw new Error("refused");
    expect(JSON.parse(models.body)).toMatchObject({ object: "list", data: [{ id: "qwen", object: "model", owned_by: "sglang" }] });
    expect(await httpGet("127.0.0.1", ports.http, "/get_server_info")).toMatchObject({ status: 401 });
    const info = await httpGet("127.0.0.1", ports.http, "/get_server_info", auth);
    if (info === "refused") throw new Error("refused");
    // The real /get_server_info echoes the key (hostkeys-sglang-facts.md §B1); tpu-deploy proxy must redact it.
    expect(JSON.parse(info.body)).toMatchObject({ nnodes: 1, node_rank: 0, tp_size: 4, page_size: 64, api_key: key, ranks_seen: [0] });
    // CORS as Starlette's middleware answers with sglang-jax's settings (§B5): every origin, credentials.
    const page = { Origin: "http://evil.example" };
    const cors = (h: IncomingHttpHeaders) => Object.fromEntries(Object.entries(h).filter(([k]) => k.startsWith("access-control-")));
    expect(cors((await httpRequest(ports.http, "/v1/models", { ...auth, ...page })).headers)).toEqual({
      "access-control-allow-origin": "*",
      "access-control-allow-credentials": "true",
    });
    const withCookie = await httpRequest(ports.http, "/v1/models", { ...auth, ...page, Cookie: "a=b" });
    expect(withCookie.headers).toMatchObject({ "access-control-allow-origin": "http://evil.example", vary: "Origin" });
    const unauthorized = await httpRequest(ports.http, "/v1/models", page);
    expect(unauthorized.status).toBe(401);
    expect(cors(unauthorized.headers)).toEqual({});
    const preflight = await httpRequest(
      ports.http,
      "/v1/chat/completions",
      {
        ...page,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
      },
      "OPTIONS",
    );
    expect(preflight).toMatchObject({ status: 200, body: "OK" });
    expect(preflight.headers).toMatchObject({
      "access-control-allow-origin": "http://evil.example",
      "access-control-allow-credentials": "true",
      "access-control-allow-headers": "authorization, content-type",
    });
    // The real server repeats the key in its log too: ServerArgs.api_key is a plain dataclass field, logged
    // whole by engine.py (`server_args=%s`).
    expect(r.output()).toMatch(new RegExp(`^\\[[-\\d: ]+\\] server_args=ServerArgs\\(.*api_key='${key}'`, "m"));
    expect(r.output()).not.toContain("api_key='***'");
  });

  it("answers chat completions and /generate with the model name", async () => {
    await setFaults({ loadDelayMs: 0 });
    const ports = await freePorts(["127.0.0.1"]);
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-8" }, rankArgs(0, "127.0.0.1", ports, ["--tp-size", "8"]));
    await waitFor(r, /fired up and ready to roll/);
    const chat = await httpPost("127.0.0.1", ports.http, "/v1/chat/completions", {
      model: MODEL,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(chat.status).toBe(200);
    expect(JSON.parse(chat.body)).toMatchObject({ object: "chat.completion", model: MODEL, choices: [{ message: { role: "assistant" } }] });
    expect(chat.body).toContain(MODEL);
    const gen = await httpPost("127.0.0.1", ports.http, "/generate", { text: "The capital of France is" });
    expect(gen.status).toBe(200);
    expect(gen.body).toContain(MODEL);
    expect((await httpPost("127.0.0.1", ports.http, "/v1/chat/completions", { model: MODEL })).status).toBe(400);
  });

  it("refuses a tp-size other than the host's devices and a multi-VM slice with --nnodes 1", async () => {
    const ports = await freePorts(["127.0.0.1"]);
    const wrongTp = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-8" }, rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4"]));
    expect(failed(await exitWithin(wrongTp, 10_000))).toBe(true);
    expect(wrongTp.output()).toContain("ERROR --tp-size 4 != global JAX device count 8");

    const partial = await startRank(v6e16(0), rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4"]));
    expect(failed(await exitWithin(partial, 10_000))).toBe(true);
    expect(partial.output()).toContain("has 4 VMs but ranks [0]");
    expect(partial.output()).toContain("--nnodes must cover whole slices");

    const rankTooBig = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-8" }, rankArgs(1, "127.0.0.1", ports, ["--tp-size", "8"]));
    expect(failed(await exitWithin(rankTooBig, 10_000))).toBe(true);
    expect(rankTooBig.output()).toContain("--node-rank 1 is out of range for --nnodes 1");
  });

  it("wedged: /health stays 200, /health_generate 503 after the health-check timeout, no 'fired up' until it recovers", async () => {
    await setFaults({ loadDelayMs: 0, wedged: true, healthCheckTimeoutMs: 2000 });
    const ports = await freePorts(["127.0.0.1"]);
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-4" }, rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4"]));
    await waitFor(r, /Uvicorn running/);
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toEqual({ status: 200, body: "" });
    const t0 = Date.now();
    expect(await httpGet("127.0.0.1", ports.http, "/health_generate")).toMatchObject({ status: 503 });
    // health_generate polls once a second for HEALTH_CHECK_TIMEOUT before it gives up (http_server.py).
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(r.output()).toContain("Health check failed. Server couldn't get a response from detokenizer for last 2 seconds.");
    expect(r.output()).not.toContain("fired up");
    await setFaults({ loadDelayMs: 0, wedged: false, healthCheckTimeoutMs: 2000 });
    expect(await httpGet("127.0.0.1", ports.http, "/health_generate")).toEqual({ status: 200, body: "" });
    await waitFor(r, /The server is fired up and ready to roll!/);
  });

  it("runs the scheduler as a child process titled sglang::scheduler; a SIGKILLed scheduler leaves uvicorn serving /health", async () => {
    await setFaults({ loadDelayMs: 0, healthCheckTimeoutMs: 2000 });
    const ports = await freePorts(["127.0.0.1"]);
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-4" }, rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4"]));
    await waitFor(r, /fired up and ready to roll/);
    const sched = childrenTitled(r, "sglang::scheduler");
    expect(sched).toHaveLength(1);
    process.kill(sched[0] ?? 0, "SIGKILL");
    await waitFor(r, /Child process unexpectedly failed with exitcode=9\. pid=\d+/);
    expect(r.isRunning()).toBe(true);
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toEqual({ status: 200, body: "" });
    expect(await httpGet("127.0.0.1", ports.http, "/health_generate")).toMatchObject({ status: 503 });
    expect(r.isRunning()).toBe(true);
  });

  it("neverReady: the process stays up and never listens", async () => {
    await setFaults({ loadDelayMs: 0, neverReady: true });
    const ports = await freePorts(["127.0.0.1"]);
    const r = await startRank({ worker: 0, ip: "127.0.0.1", accel: "v6e-4" }, rankArgs(0, "127.0.0.1", ports, ["--tp-size", "4"]));
    await waitFor(r, /Completes worker precompile/);
    await new Promise((res) => setTimeout(res, 1000));
    expect(r.isRunning()).toBe(true);
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toBe("refused");
  });
});

describe("multi-host rendezvous", () => {
  it("2 TPU7x VMs (machine type only): serves after rank 1 joins, with ranks_seen and peer IPs", async () => {
    await setFaults({ loadDelayMs: 1500 });
    const hosts = ["127.0.0.1", "127.0.0.2"];
    const ports = await freePorts(hosts);
    const common = ["--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const tpu7x = (worker: number): Identity => ({ worker, ip: hosts[worker] ?? "", machineType: "tpu7x-standard-4t" });
    const r0 = await startRank(tpu7x(0), rankArgs(0, "127.0.0.1", ports, ["--nnodes", "2", ...common]));
    await waitFor(r0, /\[Publisher 0\] Begins to synchronize, wait 1 Subscribers/);
    await new Promise((res) => setTimeout(res, 700));
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toBe("refused");
    expect(r0.output()).not.toContain("READY signal");

    // Unambiguous prefix, as argparse's allow_abbrev accepts it.
    const r1 = await startRank(tpu7x(1), rankArgs(1, "127.0.0.2", ports, ["--nnode", "2", ...common]));
    await waitFor(r0, /\[Publisher 0\] receives 1 READY signal/);
    await waitFor(r0, /\[Publisher 0\] Succeeds to synchronize!/);
    await waitFor(r1, /\[Subscriber 1\] Succeeds to synchronizes!/);
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toBe("refused"); // still loading
    expect(await httpGet("127.0.0.2", ports.http, "/health")).toBe("refused");

    await waitFor(r0, /The server is fired up and ready to roll!/);
    await waitFor(r1, new RegExp(`Starting dummy health check server at 127\\.0\\.0\\.2:${ports.http}`));
    const info = await httpGet("127.0.0.1", ports.http, "/get_server_info");
    if (info === "refused") throw new Error("refused");
    const body = JSON.parse(info.body) as Record<string, unknown>;
    expect(body).toMatchObject({ nnodes: 2, node_rank: 0, tp_size: 16, dist_init_addr: `127.0.0.1:${ports.dist}`, ranks_seen: [0, 1] });
    expect(body.peers).toMatchObject([
      { rank: 0, internal_ip: "127.0.0.1", worker_id: 0 },
      { rank: 1, internal_ip: "127.0.0.2", worker_id: 1 },
    ]);
    expect(await httpGet("127.0.0.2", ports.http, "/health")).toEqual({ status: 200, body: "" });
    expect(await httpGet("127.0.0.2", ports.http, "/health_generate")).toEqual({ status: 200, body: "" });
    expect(await httpGet("127.0.0.2", ports.http, "/v1/models")).toMatchObject({ status: 404 });
    expect(r0.output()).toMatch(/\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d NP0\] \[Publisher 0\] Succeeds to synchronize!/);
  });

  it("4 ranks of a v6e-16: no listener until the last rank joined, then all four are seen", async () => {
    await setFaults({ loadDelayMs: 300 });
    const hosts = [0, 1, 2, 3].map((w) => `127.0.0.${w + 1}`);
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "4", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const ranks: Rank[] = [];
    for (const w of [2, 0, 1]) ranks[w] = await startRank(v6e16(w), rankArgs(w, hosts[w] ?? "", ports, common));
    const r0 = ranks[0];
    if (r0 === undefined) throw new Error("no rank 0");
    await waitFor(r0, /receives 2 READY signal/);
    await new Promise((res) => setTimeout(res, 1000));
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toBe("refused");
    expect(r0.output()).not.toContain("Succeeds to synchronize");

    ranks[3] = await startRank(v6e16(3), rankArgs(3, hosts[3] ?? "", ports, common));
    await waitFor(r0, /The server is fired up and ready to roll!/);
    const info = await httpGet("127.0.0.1", ports.http, "/get_server_info");
    if (info === "refused") throw new Error("refused");
    expect(JSON.parse(info.body)).toMatchObject({ ranks_seen: [0, 1, 2, 3], nnodes: 4, tp_size: 16 });
    for (const h of hosts.slice(1)) expect(await httpGet(h, ports.http, "/health")).toEqual({ status: 200, body: "" });
  });

  // Starts ranks (all v6e-16 unless told), then expects every member to exit non-zero with `message`.
  async function expectAllFail(
    members: { rank: number; worker: number; args?: string[]; id?: Identity }[],
    message: RegExp,
    opts: { tp?: number; addrHost?: string } = {},
  ): Promise<void> {
    await setFaults({ loadDelayMs: 0 });
    const hosts = members.map((m) => `127.0.0.${m.worker + 1}`);
    const ports = await freePorts(hosts);
    const ranks: Rank[] = [];
    for (const m of members) {
      const args = [
        "--nnodes",
        "4",
        "--tp-size",
        String(opts.tp ?? 16),
        "--dist-init-addr",
        `${opts.addrHost ?? "127.0.0.1"}:${ports.dist}`,
        ...(m.args ?? []),
      ];
      const id = m.id ?? v6e16(m.worker);
      ranks.push(await startRank(id, rankArgs(m.rank, id.ip, ports, args)));
    }
    for (const r of ranks) {
      const e = await exitWithin(r, 20_000);
      expect(failed(e), r.output()).toBe(true);
      expect(r.output()).toMatch(/ERROR /);
      expect(r.output()).toMatch(message);
    }
  }

  const inOrder = [0, 1, 2, 3].map((w) => ({ rank: w, worker: w }));

  it("wrong --tp-size stops every member", async () => {
    await expectAllFail(inOrder, /--tp-size 8 != global JAX device count 16/, { tp: 8 });
  });

  it("ranks out of TPU worker order stop every member", async () => {
    const swapped = [
      { rank: 0, worker: 0 },
      { rank: 2, worker: 1 },
      { rank: 1, worker: 2 },
      { rank: 3, worker: 3 },
    ];
    await expectAllFail(swapped, /should be --node-rank 2 \(slice offset 0 \+ worker 2\): ranks of a slice must follow TPU worker order/);
  });

  it("a different model on one host stops every member", async () => {
    const members = inOrder.map((m) => (m.rank === 3 ? { ...m, args: ["--model-path", "Qwen/Qwen3-32B"] } : m));
    await expectAllFail(members, /--model-path Qwen\/Qwen3-32B but rank 0 with --model-path Qwen\/Qwen3-8B/);
  });

  it("an out-of-range rank stops every member", async () => {
    const members = inOrder.map((m) => (m.rank === 3 ? { ...m, rank: 4 } : m));
    await expectAllFail(members, /--node-rank 4 is out of range for --nnodes 4/);
  });

  it("a duplicate rank stops every member", async () => {
    await setFaults({ loadDelayMs: 0 });
    const hosts = [0, 1, 2, 3].map((w) => `127.0.0.${w + 1}`);
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "4", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const ranks: Rank[] = [];
    for (const w of [0, 1, 3]) ranks.push(await startRank(v6e16(w), rankArgs(w, hosts[w] ?? "", ports, common)));
    const r0 = ranks[0];
    if (r0 === undefined) throw new Error("no rank 0");
    await waitFor(r0, /receives 2 READY signal/);
    // Worker 2's host was given rank 1 a second time.
    ranks.push(await startRank(v6e16(2), rankArgs(1, hosts[2] ?? "", ports, common)));
    for (const r of ranks) {
      expect(failed(await exitWithin(r, 15_000))).toBe(true);
      expect(r.output()).toContain("rank 1 joined twice: from 127.0.0.2 (worker 1) and 127.0.0.3 (worker 2)");
    }
  });

  for (const [host, message] of [
    ["localhost", /host 'localhost' is not a numeric IP/],
    ["0.0.0.0", /--dist-init-addr host 0\.0\.0\.0/],
    ["10.99.0.7", /10\.99\.0\.7/],
  ] as const) {
    it(`--dist-init-addr ${host} stops every member`, async () => {
      await expectAllFail(inOrder, message, { addrHost: host });
    });
  }

  it("rank 0's bind refusals name the real ZMQ errors", async () => {
    const ports = await freePorts(["127.0.0.1"]);
    const id = v6e16(0);
    const byName = await startRank(
      id,
      rankArgs(0, id.ip, ports, ["--nnodes", "4", "--tp-size", "16", "--dist-init-addr", `localhost:${ports.dist}`]),
    );
    expect(failed(await exitWithin(byName, 10_000))).toBe(true);
    expect(byName.output()).toContain("ZMQError: No such device");
    const external = await startRank(
      id,
      rankArgs(0, id.ip, ports, ["--nnodes", "4", "--tp-size", "16", "--dist-init-addr", `198.18.7.10:${ports.dist}`]),
    );
    expect(failed(await exitWithin(external, 10_000))).toBe(true);
    expect(external.output()).toContain("ZMQError: Cannot assign requested address");
    expect(external.output()).toContain("external (NAT) IP");
  });

  it("another worker's IP as --dist-init-addr stops every member", async () => {
    await expectAllFail(inOrder, /127\.0\.0\.2/, { addrHost: "127.0.0.2" });
  });

  // Four ranks of one v6e-16 serving; JAX's heartbeat timeout and the health-check timeout made short.
  async function servingFour(heartbeatMs = 4000): Promise<{ ranks: Rank[]; ports: { dist: number; http: number }; hosts: string[] }> {
    await setFaults({ loadDelayMs: 0, jaxHeartbeatTimeoutMs: heartbeatMs, healthCheckTimeoutMs: 2000 });
    const hosts = [0, 1, 2, 3].map((w) => `127.0.0.${w + 1}`);
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "4", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const ranks: Rank[] = [];
    for (const w of [0, 1, 2, 3]) ranks.push(await startRank(v6e16(w), rankArgs(w, hosts[w] ?? "", ports, common)));
    await waitFor(ranks[0] as Rank, /fired up and ready to roll/);
    for (const r of ranks.slice(1)) await waitFor(r, /Starting dummy health check server/);
    return { ranks, ports, hosts };
  }

  const at = (ranks: Rank[], i: number): Rank => {
    const r = ranks[i];
    if (r === undefined) throw new Error(`no rank ${i}`);
    return r;
  };

  it("titles each rank's scheduler process sglang::scheduler_NP<rank>", async () => {
    const { ranks } = await servingFour();
    ranks.forEach((r, i) => {
      expect(childrenTitled(r, `sglang::scheduler_NP${i}`)).toHaveLength(1);
    });
  });

  it("the death of a rank >= 1 goes unnoticed until JAX's heartbeat timeout; then the schedulers exit and every main process stays", async () => {
    const { ranks, ports, hosts } = await servingFour();
    const r0 = at(ranks, 0);
    const r1 = at(ranks, 1);
    const pgid = r1.proc.pid ?? 0;
    const t0 = Date.now();
    process.kill(-pgid, "SIGKILL");
    await r1.exited;
    // No heartbeat between ranks: rank 0 still says it is healthy, but a generation hangs in the collective.
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toEqual({ status: 200, body: "" });
    expect(await httpGet("127.0.0.1", ports.http, "/health_generate")).toMatchObject({ status: 503 });
    expect(r0.output()).not.toContain("Scheduler hit an exception");
    // JAX's coordination service notices the missing task after the heartbeat timeout (4 s here). The other
    // ranks learn it from the coordinator, or, when the coordinator is slow to answer (a loaded machine), give
    // up on its heartbeat first: both are how a real client ends (xla client.h).
    await waitFor(r0, /Terminating process because the JAX distributed service detected fatal errors/, 20_000);
    for (const i of [2, 3]) {
      await waitFor(
        at(ranks, i),
        /Terminating process because (the JAX distributed service detected fatal errors|of missing heartbeat response from the coordinator)/,
        20_000,
      );
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3500);
    expect(r0.output()).toContain("task:1 heartbeat timeout");
    await waitFor(r0, /Child process unexpectedly failed with exitcode=256\. pid=\d+/);
    for (const i of [0, 2, 3]) {
      const r = at(ranks, i);
      expect(r.isRunning()).toBe(true);
      expect(childrenTitled(r, `sglang::scheduler_NP${i}`)).toEqual([]);
    }
    expect(await httpGet("127.0.0.1", ports.http, "/health")).toEqual({ status: 200, body: "" });
    for (const h of hosts.slice(2)) expect(await httpGet(h, ports.http, "/health")).toEqual({ status: 200, body: "" });
  });

  it("the death of rank 0: the others keep waiting on the broadcast until the heartbeat timeout, then their schedulers exit", async () => {
    // A heartbeat timeout longer than the subscribers' 5 s receive timeout.
    const { ranks, ports, hosts } = await servingFour(8000);
    process.kill(-(at(ranks, 0).proc.pid ?? 0), "SIGKILL");
    await at(ranks, 0).exited;
    const r1 = at(ranks, 1);
    await waitFor(r1, /\[Subscriber 1\] Fails to receive data with timeout, and try again/, 10_000);
    for (const i of [1, 2, 3]) {
      await waitFor(at(ranks, i), /Terminating process because of missing heartbeat response from the coordinator/, 20_000);
    }
    for (const i of [1, 2, 3]) {
      const r = at(ranks, i);
      expect(r.isRunning()).toBe(true);
      expect(childrenTitled(r, `sglang::scheduler_NP${i}`)).toEqual([]);
    }
    // The dummy health server of a rank >= 1 answers 200 whatever its scheduler does.
    expect(await httpGet(hosts[1] ?? "", ports.http, "/health")).toEqual({ status: 200, body: "" });
    expect(await httpGet(hosts[1] ?? "", ports.http, "/health_generate")).toEqual({ status: 200, body: "" });
  });

  it("binds JAX's coordinator on [::]:P (every address, IPv6 too) and only after the ZMQ handshake", async () => {
    await setFaults({ loadDelayMs: 0 });
    const hosts = ["127.0.0.1", "127.0.0.2"];
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "2", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const id = (w: number): Identity => ({ worker: w, ip: hosts[w] ?? "", accel: "tpu7x-16" });
    const r0 = await startRank(id(0), rankArgs(0, "127.0.0.1", ports, common));
    await waitFor(r0, /\[Publisher 0\] Begins to synchronize, wait 1 Subscribers/);
    // P+5 and P+6 are bound on HOST; P is not bound at all until the handshake is done.
    expect(await canListen("127.0.0.1", ports.dist + 6)).toBe(false);
    expect(await canListen("127.0.0.1", ports.dist + 5)).toBe(false);
    expect(await canListen("127.0.0.7", ports.dist + 5)).toBe(true);
    expect(await canListen("127.0.0.1", ports.dist)).toBe(true);
    const r1 = await startRank(id(1), rankArgs(1, "127.0.0.2", ports, common));
    await waitFor(r0, /fired up and ready to roll/);
    await waitFor(r1, /Starting dummy health check server/);
    for (const addr of ["127.0.0.1", "127.0.0.7", "::1"]) expect(await tcpConnects(addr, ports.dist), addr).toBe(true);
  });

  it("refuses ranks that span two TPU slices (told apart by the metadata instance name) as JAX would fail its mesh", async () => {
    await setFaults({ loadDelayMs: 0 });
    const hosts = ["127.0.0.1", "127.0.0.2"];
    const ports = await freePorts(hosts);
    // Two single-VM v6e-4 slices in one zone: same accelerator type, worker 0 each, different TPU nodes.
    const ids: Identity[] = [
      { worker: 0, ip: "127.0.0.1", accel: "v6e-4", name: "t1v-n-1a2b3c4d-w-0" },
      { worker: 0, ip: "127.0.0.2", accel: "v6e-4", name: "t1v-n-5e6f7a8b-w-0" },
    ];
    const common = ["--nnodes", "2", "--tp-size", "8", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const ranks = [
      await startRank(ids[0] as Identity, rankArgs(0, "127.0.0.1", ports, common)),
      await startRank(ids[1] as Identity, rankArgs(1, "127.0.0.2", ports, common)),
    ];
    for (const r of ranks) {
      expect(failed(await exitWithin(r, 20_000)), r.output()).toBe(true);
      expect(r.output()).toContain("the ranks span 2 TPU slices");
      expect(r.output()).toContain("t1v-n-1a2b3c4d@us-east5-b: ranks [0]");
      expect(r.output()).toContain("ValueError: Number of devices 4 must equal the product of mesh_shape [1, 8]");
      expect(r.output()).not.toContain("Uvicorn running");
    }
  });
});

describe("faults", () => {
  it("crash after the rendezvous kills that rank's tree; rank 0 waits in the precompile collective until the heartbeat timeout", async () => {
    await setFaults({ loadDelayMs: 500, crash: { rank: 1, when: "after-rendezvous" }, jaxHeartbeatTimeoutMs: 3000 });
    const hosts = ["127.0.0.1", "127.0.0.2"];
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "2", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const id = (w: number): Identity => ({ worker: w, ip: hosts[w] ?? "", accel: "tpu7x-16" });
    const r0 = await startRank(id(0), rankArgs(0, "127.0.0.1", ports, common));
    const r1 = await startRank(id(1), rankArgs(1, "127.0.0.2", ports, common));
    // The scheduler's exception SIGQUITs its main process, which SIGKILLs its own tree.
    expect(await exitWithin(r1, 10_000)).toEqual({ code: null, signal: "SIGKILL" });
    expect(r1.output()).toContain("Scheduler hit an exception");
    expect(r1.output()).toContain("RuntimeError: injected crash");
    expect(r1.output()).toContain("Received sigquit from a child process. It usually means the child failed.");
    await new Promise((res) => setTimeout(res, 1500));
    expect(r0.isRunning()).toBe(true);
    // Rank 0's scheduler exits on JAX's heartbeat; its main process then finds the pipe closed.
    expect(failed(await exitWithin(r0, 15_000))).toBe(true);
    expect(r0.output()).toContain("task:1 heartbeat timeout");
    expect(r0.output()).toContain("Node 0 jax_scheduler is dead. Please check if there are relevant logs.");
    expect(r0.output()).not.toContain("Uvicorn running");
  });

  it("ignoreSigtermRanks: SIGTERM to the rank's process group is ignored until SIGKILL", async () => {
    await setFaults({ loadDelayMs: 0, ignoreSigtermRanks: [1] });
    const hosts = ["127.0.0.1", "127.0.0.2"];
    const ports = await freePorts(hosts);
    const common = ["--nnodes", "2", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const id = (w: number): Identity => ({ worker: w, ip: hosts[w] ?? "", accel: "tpu7x-16" });
    const r0 = await startRank(id(0), rankArgs(0, "127.0.0.1", ports, common));
    const r1 = await startRank(id(1), rankArgs(1, "127.0.0.2", ports, common));
    await waitFor(r1, /Starting dummy health check server/);
    await waitFor(r0, /fired up/);
    const pgid = r1.proc.pid;
    if (pgid === undefined) throw new Error("no pid");
    process.kill(-pgid, "SIGTERM");
    r0.proc.kill("SIGTERM");
    expect(failed(await exitWithin(r0, 5_000))).toBe(true);
    await new Promise((res) => setTimeout(res, 1000));
    expect(r1.isRunning()).toBe(true);
    expect(childrenTitled(r1, "sglang::scheduler_NP1")).toHaveLength(1);
    expect(await httpGet("127.0.0.2", ports.http, "/health")).toEqual({ status: 200, body: "" });
    process.kill(-pgid, "SIGKILL");
    expect(await exitWithin(r1, 5_000)).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("jaxInitTimeoutMs bounds the JAX step: a rank that passed the handshake but never reaches port P fails rank 0", async () => {
    await setFaults({ loadDelayMs: 0, jaxInitTimeoutMs: 1500 });
    const ports = await freePorts(["127.0.0.1"]);
    const common = ["--nnodes", "2", "--tp-size", "16", "--dist-init-addr", `127.0.0.1:${ports.dist}`];
    const r0 = await startRank({ worker: 0, ip: "127.0.0.1", accel: "tpu7x-16" }, rankArgs(0, "127.0.0.1", ports, common));
    await waitFor(r0, /\[Publisher 0\] Begins to synchronize/);
    // A rank 1 that only gets through on P+6 (the double's own wire format), as if P and P+5 were firewalled.
    const peer = connect(ports.dist + 6, "127.0.0.1");
    cleanups.push(() => void peer.destroy());
    const info = {
      rank: 1,
      nnodes: 2,
      tp_size: 16,
      dp_size: 1,
      model_path: MODEL,
      worker_id: 1,
      accelerator_type: "tpu7x-16",
      slice_id: "tpu7x-16@us-east5-b",
      slice_vms: 2,
      devices: 8,
      internal_ip: "127.0.0.2",
      hostname: "fake",
    };
    const reply = new Promise<string>((resolve) => peer.once("data", (b: Buffer) => resolve(b.toString())));
    peer.write(JSON.stringify({ type: "READY", info }) + "\n");
    expect(JSON.parse(await reply)).toMatchObject({ type: "ACK", ranks: [0, 1] });
    const started = Date.now();
    expect((await exitWithin(r0, 10_000)).signal).toBe("SIGKILL");
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(r0.output()).toContain("jax.distributed.initialize failed after waiting for the other processes (1.5 s at most)");
    expect(r0.output()).toContain(
      "DEADLINE_EXCEEDED: Barrier timed out. Id: PjRT_Client_Connect. # of tasks that reached the barrier: 1/2",
    );
  });

  it("a bad faults.json fails loudly instead of being ignored", async () => {
    await writeFile(join(simRoot, "faults.json"), JSON.stringify({ server: { wedgd: true } }));
    const r = spawnDouble(["--model-path", MODEL]);
    expect(failed(await exitWithin(r, 10_000))).toBe(true);
    expect(r.output()).toContain("unknown server fault 'wedgd'");
  });
});
