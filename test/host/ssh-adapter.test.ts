// Runs the adapter against a real OpenSSH sshd that this file starts on 127.0.0.1 (as root, own host
// key and authorized_keys), plus a plain node:http server standing in for sglang-jax.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeSessions, connectAll, connectHost } from "../../src/adapters/ssh/connection.js";
import { startLocalForward } from "../../src/adapters/ssh/forward.js";
import { httpViaSsh } from "../../src/adapters/ssh/http.js";
import type { HostSession } from "../../src/adapters/ssh/session.js";
import type { SshTarget } from "../../src/core/ssh-target.js";
import { SshError } from "../../src/errors.js";

const run = promisify(execFile);
// Unique sleep durations, so pgrep finds this run's remote commands and no one else's.
const tag = String(Date.now() % 1_000_000).padStart(6, "0");

let dir = "";
let sshd: ChildProcess | undefined;
let sshdLog = "";
let sshPort = 0;
let http: HttpServer | undefined;
let httpPort = 0;
const seen: { method: string; url: string; headers: IncomingMessage["headers"]; body: string }[] = [];
const httpSockets = new Set<Socket>();
const opened: HostSession[] = [];

async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (typeof addr !== "object" || addr === null) throw new Error("no port");
  return addr.port;
}

function target(over: Partial<SshTarget> = {}): SshTarget {
  return {
    alias: "c",
    hostName: "127.0.0.1",
    port: sshPort,
    user: "root",
    identityFile: join(dir, "id_rsa"),
    hostKeys: { kind: "first-use" },
    ...over,
  };
}

/** A public key file as {type, key}, and its fingerprint as ssh-keygen prints it. */
async function publicKey(file: string): Promise<{ type: string; key: string; fingerprint: string }> {
  const [type = "", key = ""] = (await readFile(join(dir, `${file}.pub`), "utf8")).trim().split(/\s+/);
  const fingerprint = (await run("ssh-keygen", ["-lf", join(dir, `${file}.pub`)])).stdout.split(" ")[1] ?? "";
  return { type, key, fingerprint };
}

function acceptedLogins(): number {
  return sshdLog.split("\n").filter((l) => l.includes("Accepted publickey")).length;
}

async function connect(over: Partial<SshTarget> = {}): Promise<HostSession> {
  const s = await connectHost(target(over), { timeoutMs: 10_000 });
  opened.push(s);
  return s;
}

async function caught(p: Promise<unknown>): Promise<SshError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof SshError) return err;
    throw err;
  }
  throw new Error("expected an SshError, got success");
}

async function remoteProcesses(pattern: string): Promise<string> {
  try {
    return (await run("pgrep", ["-f", pattern])).stdout;
  } catch {
    return ""; // pgrep exits 1 when nothing matches
  }
}

async function eventually(check: () => Promise<boolean> | boolean, ms = 3_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

async function sshdChildren(): Promise<string> {
  if (sshd?.pid === undefined) throw new Error("sshd not running");
  try {
    return (await run("pgrep", ["-P", String(sshd.pid)])).stdout;
  } catch {
    return "";
  }
}

function countResources(kind: string): number {
  return process.getActiveResourcesInfo().filter((r) => r === kind).length;
}

async function plainGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tpd-ssh-test-"));
  const keygen = (file: string, ...args: string[]) => run("ssh-keygen", ["-q", "-N", "", "-C", file, "-f", join(dir, file), ...args]);
  // SkyPilot's cluster key is a PEM RSA key; also check a modern ed25519 key and one the host does not know.
  await Promise.all([
    keygen("host_key", "-t", "ed25519"),
    keygen("host_key_ecdsa", "-t", "ecdsa"),
    keygen("id_rsa", "-t", "rsa", "-b", "2048", "-m", "PEM"),
    keygen("id_ed25519", "-t", "ed25519"),
    keygen("id_wrong", "-t", "ed25519"),
  ]);
  const authorized = (await readFile(join(dir, "id_rsa.pub"), "utf8")) + (await readFile(join(dir, "id_ed25519.pub"), "utf8"));
  await writeFile(join(dir, "authorized_keys"), authorized, { mode: 0o600 });
  await writeFile(join(dir, "not_a_key"), "this is not a key\n", { mode: 0o600 });
  sshPort = await freePort();
  await writeFile(
    join(dir, "sshd_config"),
    [
      `Port ${sshPort}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `HostKey ${join(dir, "host_key_ecdsa")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "PermitRootLogin prohibit-password",
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AllowTcpForwarding yes",
      "",
    ].join("\n"),
  );
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege-separation dir
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  sshd = child;
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on("data", (b: Buffer) => {
      sshdLog += b.toString();
      if (sshdLog.includes(`Server listening on 127.0.0.1 port ${sshPort}`)) resolve();
    });
    child.once("exit", (code) => reject(new Error(`sshd exited ${code}: ${sshdLog}`)));
  });

  http = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() });
      if (req.url === "/slow") return; // never answers
      res.setHeader("x-echo", req.url ?? "");
      res.setHeader("set-cookie", ["a=1", "b=2"]);
      res.writeHead(req.url === "/missing" ? 404 : 200, { "content-type": "text/plain" });
      res.end(`hello ${req.method} ${req.url}`);
    });
  });
  http.on("connection", (s: Socket) => {
    httpSockets.add(s);
    s.once("close", () => httpSockets.delete(s));
  });
  await new Promise<void>((resolve) => http?.listen(0, "127.0.0.1", resolve));
  const addr = http.address();
  if (typeof addr !== "object" || addr === null) throw new Error("no http port");
  httpPort = addr.port;
}, 60_000);

afterEach(async () => {
  await closeSessions(opened.splice(0));
});

afterAll(async () => {
  for (const s of httpSockets) s.destroy();
  await new Promise<void>((resolve) => (http ? http.close(() => resolve()) : resolve()));
  if (sshd?.exitCode === null) {
    const exited = new Promise((r) => sshd?.once("exit", r));
    sshd.kill("SIGTERM");
    await exited;
  }
  if (dir !== "") await rm(dir, { recursive: true, force: true });
});

describe("exec", () => {
  it("returns exit codes, stdout and stderr of real commands", async () => {
    const s = await connect();
    expect(await s.exec("true")).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await s.exec("echo out; echo err >&2; exit 7")).toEqual({ code: 7, stdout: "out\n", stderr: "err\n" });
    expect(await s.exec("printf '%s' \"$(whoami)\"")).toMatchObject({ code: 0, stdout: "root" });
    expect(await s.exec("kill -TERM $$")).toMatchObject({ code: null, signal: "SIGTERM" });
  });

  it("runs commands in parallel on one connection", async () => {
    const s = await connect();
    const started = Date.now();
    const results = await Promise.all([1, 2, 3, 4].map((n) => s.exec(`sleep 1; echo ${n}`)));
    expect(results.map((r) => r.stdout)).toEqual(["1\n", "2\n", "3\n", "4\n"]);
    expect(Date.now() - started).toBeLessThan(3_500); // one after another would take 4 s
  });

  it("shares one run-wide signal across many concurrent steps without a listener warning", async () => {
    const s = await connect();
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on("warning", onWarning);
    try {
      const ac = new AbortController();
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => s.exec(`echo ${i}`, { signal: ac.signal })));
      const forwards = await Promise.all(Array.from({ length: 12 }, () => s.forwardOut("127.0.0.1", httpPort, { signal: ac.signal })));
      for (const f of forwards) f.destroy();
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 8 }, (_, i) => `${i}\n`));
      await new Promise((r) => setImmediate(r));
      expect(warnings.map((w) => w.message)).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("works with an ed25519 key too", async () => {
    const s = await connect({ identityFile: join(dir, "id_ed25519") });
    expect((await s.exec("echo ok")).stdout).toBe("ok\n");
  });

  it("delivers stdin byte for byte into a 0600 file, never interpreting it", async () => {
    const s = await connect();
    const marker = join(dir, "pwned");
    const secret = `line1\nline2 'single' "double" $(touch ${marker}) \`touch ${marker}\` \\ %s\n\ttab\r\nno newline at end`;
    const file = join(dir, "secret.txt");
    const r = await s.exec(`umask 077 && cat > ${file}`, { stdin: secret });
    expect(r.code).toBe(0);
    expect(await readFile(file, "utf8")).toBe(secret);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(existsSync(marker)).toBe(false);

    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await s.exec(`cat > ${file}.bin`, { stdin: binary });
    expect(await readFile(`${file}.bin`)).toEqual(binary);
  });

  it("streams a large stdin and stdout through the SSH window", async () => {
    const s = await connect();
    const big = Buffer.alloc(3 * 1024 * 1024, "abcdefghij");
    const r = await s.exec("cat", { stdin: big });
    expect(r.stdout.length).toBe(big.length);
    expect(r.stdout).toBe(big.toString());
  });

  it("ends stdin when there is none, so a command reading it does not hang", async () => {
    const s = await connect();
    expect(await s.exec("cat; echo done", { timeoutMs: 5_000 })).toEqual({ code: 0, stdout: "done\n", stderr: "" });
  });

  it("cuts a command at its timeout and kills it on the host", async () => {
    const s = await connect();
    const started = Date.now();
    const err = await caught(s.exec(`sleep 30.${tag}`, { timeoutMs: 500 }));
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(err).toMatchObject({ host: "c", stage: "timeout" });
    expect(err.message).toContain("timed out after 500 ms");
    expect(await eventually(async () => (await remoteProcesses(`sleep 30.${tag}`)) === "")).toBe(true);
    expect((await s.exec("echo still usable")).stdout).toBe("still usable\n");
  });

  it("stops a command when the signal aborts, and kills it on the host", async () => {
    const s = await connect();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const started = Date.now();
    const err = await caught(s.exec(`sleep 31.${tag}`, { signal: ac.signal }));
    expect(Date.now() - started).toBeLessThan(1_300);
    expect(err).toMatchObject({ stage: "exec", reason: "cancelled" });
    expect(await eventually(async () => (await remoteProcesses(`sleep 31.${tag}`)) === "")).toBe(true);
  });

  it("does not start a command when the signal has already aborted", async () => {
    const s = await connect();
    const marker = join(dir, "should-not-exist");
    const err = await caught(s.exec(`touch ${marker}`, { signal: AbortSignal.abort() }));
    expect(err.reason).toBe("cancelled");
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(marker)).toBe(false);
  });

  it("refuses to exec on a closed session with a clear error", async () => {
    const s = await connect();
    await s.close();
    expect(s.closed).toBe(true);
    const err = await caught(s.exec("true"));
    expect(err).toMatchObject({ stage: "exec", reason: "lost" });
    await s.close(); // idempotent
  });

  it("reports a connection that drops mid-command as lost", async () => {
    // Kill only this session's sshd process (the listener forks one per connection).
    expect(await eventually(async () => (await sshdChildren()) === "")).toBe(true);
    const s = await connect();
    const pending = s.exec("sleep 20");
    const children = (await sshdChildren()).trim().split("\n").filter(Boolean).map(Number);
    expect(children).toHaveLength(1);
    process.kill(children[0] ?? 0, "SIGKILL");
    const err = await caught(pending);
    expect(err).toMatchObject({ stage: "exec", reason: "lost" });
    expect(s.closed).toBe(true);
  });
});

describe("connect", () => {
  it("rejects a key the host does not know with stage auth", async () => {
    const err = await caught(connectHost(target({ identityFile: join(dir, "id_wrong") }), { timeoutMs: 5_000 }));
    expect(err).toMatchObject({ host: "c", stage: "auth" });
    expect(err.message).toContain("refused the key");
    expect(err.hint).toContain("sky status");
  });

  it("reports an unreadable or malformed key file as stage auth", async () => {
    const missing = await caught(connectHost(target({ identityFile: join(dir, "nope") })));
    expect(missing).toMatchObject({ stage: "auth" });
    expect(missing.message).toContain(join(dir, "nope"));
    const garbage = await caught(connectHost(target({ identityFile: join(dir, "not_a_key") })));
    expect(garbage).toMatchObject({ stage: "auth" });
  });

  it("fails fast with stage connect when nothing listens", async () => {
    const port = await freePort();
    const started = Date.now();
    const err = await caught(connectHost(target({ port }), { timeoutMs: 10_000 }));
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(err).toMatchObject({ stage: "connect", reason: "refused" });
    expect(err.message).toContain(`127.0.0.1:${port}`);
  });

  it("times out when the host accepts TCP but never speaks SSH", async () => {
    const sockets = new Set<Socket>();
    let hungUp = 0;
    const silent = createNetServer((sock) => {
      sockets.add(sock);
      sock.on("error", () => undefined);
      sock.once("close", () => hungUp++);
      sock.resume(); // read (and ignore) the client's banner, so its FIN is seen
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const addr = silent.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      const started = Date.now();
      const err = await caught(connectHost(target({ port }), { timeoutMs: 400 }));
      expect(Date.now() - started).toBeLessThan(1_200);
      expect(err).toMatchObject({ stage: "timeout" });

      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const cancelled = await caught(connectHost(target({ port }), { timeoutMs: 10_000, signal: ac.signal }));
      expect(cancelled).toMatchObject({ stage: "connect", reason: "cancelled" });
      // the adapter hung up on the silent server both times
      expect(await eventually(() => hungUp === 2)).toBe(true);
      expect(sockets.size).toBe(2);
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe("host keys", () => {
  const pin = (...keys: { type: string; key: string }[]): SshTarget["hostKeys"] => ({
    kind: "pinned",
    keys: keys.map(({ type, key }) => ({ type, key })),
    from: "tpu-api",
  });

  it("connects when the host offers the pinned key, and says which key it offered", async () => {
    const host = await publicKey("host_key");
    const s = await connect({ hostKeys: pin(host) });
    expect(s.hostKey).toEqual({ type: host.type, key: host.key });
    expect((await s.exec("echo ok")).stdout).toBe("ok\n");
  });

  it("asks only for the pinned types, so a host pinned by its ecdsa key is checked by that key", async () => {
    const ecdsa = await publicKey("host_key_ecdsa");
    const s = await connect({ hostKeys: pin(ecdsa) });
    expect(s.hostKey).toEqual({ type: ecdsa.type, key: ecdsa.key });
  });

  it("refuses a host whose key is not the pinned one before logging in: host key changed, with both fingerprints", async () => {
    const host = await publicKey("host_key");
    const other = await publicKey("id_wrong"); // any other ed25519 key
    const logins = acceptedLogins();
    const err = await caught(connect({ hostKeys: pin(other) }));
    expect(err).toBeInstanceOf(SshError);
    expect(err).toMatchObject({ host: "c", stage: "connect", reason: "host-key", code: "ssh_failed" });
    expect(err.message).toContain("host key changed");
    expect(err.message).toContain(`127.0.0.1:${sshPort}`);
    expect(err.message).toContain(`ssh-ed25519 ${host.fingerprint}`); // offered
    expect(err.message).toContain(`ssh-ed25519 ${other.fingerprint}`); // expected
    expect(err.hint).toMatch(/nothing was sent/i);
    // The private key was never offered to it: sshd saw no login.
    await new Promise((r) => setTimeout(r, 200));
    expect(acceptedLogins()).toBe(logins);
  });

  it("on first use accepts the key the host offers and reports it, for the caller to pin", async () => {
    const host = await publicKey("host_key");
    const s = await connect({ hostKeys: { kind: "first-use" } });
    expect(s.hostKey).toEqual({ type: host.type, key: host.key });
  });

  it("connectAll reports a changed key for that host only", async () => {
    const other = await publicKey("id_wrong");
    const results = await connectAll([target({ alias: "good" }), target({ alias: "bad", hostKeys: pin(other) })], { timeoutMs: 10_000 });
    for (const r of results) if (r.kind === "ok") opened.push(r.session);
    expect(results.map((r) => [r.host, r.kind, r.kind === "error" ? r.error.reason : undefined])).toEqual([
      ["good", "ok", undefined],
      ["bad", "error", "host-key"],
    ]);
  });
});

describe("forwarding", () => {
  it("opens a direct-tcpip channel to an address the host can reach", async () => {
    const s = await connect();
    const ch = await s.forwardOut("127.0.0.1", httpPort);
    const reply = await new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      ch.on("data", (c: Buffer) => chunks.push(c));
      ch.on("end", () => resolve(Buffer.concat(chunks).toString()));
      ch.on("error", reject);
      ch.write("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    });
    ch.destroy();
    expect(reply).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(reply).toContain("hello GET /raw");
  });

  it("reports a refused forward as stage forward, reason refused", async () => {
    const s = await connect();
    const port = await freePort();
    const err = await caught(s.forwardOut("127.0.0.1", port));
    expect(err).toMatchObject({ stage: "forward", reason: "refused" });
    expect(err.hint).toContain("still be starting");
  });

  it("does a real HTTP/1.1 request through the host with httpViaSsh", async () => {
    const s = await connect();
    const get = await httpViaSsh(s, "127.0.0.1", httpPort, { path: "/health?x=1", timeoutMs: 5_000 });
    expect(get.status).toBe(200);
    expect(get.body).toBe("hello GET /health?x=1");
    expect(get.headers["x-echo"]).toBe("/health?x=1");
    expect(get.headers["set-cookie"]).toBe("a=1, b=2");

    const body = JSON.stringify({ text: "héllo", max_new_tokens: 4 });
    const post = await httpViaSsh(s, "127.0.0.1", httpPort, {
      method: "POST",
      path: "/generate",
      headers: { "content-type": "application/json", "x-run": "7" },
      body,
      timeoutMs: 5_000,
    });
    expect(post.status).toBe(200);
    const last = seen[seen.length - 1];
    expect(last).toMatchObject({ method: "POST", url: "/generate", body });
    expect(last?.headers).toMatchObject({
      "content-type": "application/json",
      "x-run": "7",
      "content-length": String(Buffer.byteLength(body)),
      host: `127.0.0.1:${httpPort}`,
    });

    expect((await httpViaSsh(s, "127.0.0.1", httpPort, { path: "/missing", timeoutMs: 5_000 })).status).toBe(404);
  });

  it("gives up on a server that never answers, and hangs up on it", async () => {
    const s = await connect();
    const before = httpSockets.size;
    const started = Date.now();
    const err = await caught(httpViaSsh(s, "127.0.0.1", httpPort, { path: "/slow", timeoutMs: 500 }));
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(err).toMatchObject({ stage: "timeout" });
    expect(await eventually(() => httpSockets.size <= before)).toBe(true);
  });

  it("cancels an HTTP request when the signal aborts", async () => {
    const s = await connect();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const err = await caught(httpViaSsh(s, "127.0.0.1", httpPort, { path: "/slow", timeoutMs: 10_000, signal: ac.signal }));
    expect(err).toMatchObject({ stage: "forward", reason: "cancelled" });
  });

  it("serves real HTTP requests on a local port through startLocalForward", async () => {
    const s = await connect();
    const fwd = await startLocalForward({ session: s, destHost: "127.0.0.1", destPort: httpPort, localPort: 0 });
    expect(fwd.port).toBeGreaterThan(0);
    try {
      const replies = await Promise.all(["/a", "/b", "/c"].map((p) => plainGet(fwd.port, p)));
      expect(replies).toEqual([
        { status: 200, body: "hello GET /a" },
        { status: 200, body: "hello GET /b" },
        { status: 200, body: "hello GET /c" },
      ]);
    } finally {
      await fwd.close();
    }
    const refused = await new Promise<string>((resolve) => {
      const sock = netConnect(fwd.port, "127.0.0.1");
      sock.on("connect", () => {
        sock.destroy();
        resolve("connected");
      });
      sock.on("error", (e: Error & { code?: string }) => resolve(e.code ?? "error"));
    });
    expect(refused).toBe("ECONNREFUSED");
  });

  it("reports forwards the host refuses through onError, and stops on abort", async () => {
    const s = await connect();
    const errors: SshError[] = [];
    const ac = new AbortController();
    const deadPort = await freePort();
    const fwd = await startLocalForward({
      session: s,
      destHost: "127.0.0.1",
      destPort: deadPort,
      localPort: 0,
      signal: ac.signal,
      onError: (e) => errors.push(e),
    });
    await expect(plainGet(fwd.port, "/")).rejects.toThrow();
    expect(errors[0]).toMatchObject({ stage: "forward", reason: "refused" });
    ac.abort();
    expect(
      await eventually(async () =>
        plainGet(fwd.port, "/").then(
          () => false,
          (e: Error & { code?: string }) => e.code === "ECONNREFUSED",
        ),
      ),
    ).toBe(true);
    await fwd.close();
  });

  it("refuses a local port that is taken with stage forward", async () => {
    const s = await connect();
    const first = await startLocalForward({ session: s, destHost: "127.0.0.1", destPort: httpPort, localPort: 0 });
    try {
      const err = await caught(startLocalForward({ session: s, destHost: "127.0.0.1", destPort: httpPort, localPort: first.port }));
      expect(err).toMatchObject({ stage: "forward" });
      expect(err.message).toContain("EADDRINUSE");
    } finally {
      await first.close();
    }
  });
});

describe("connectAll", () => {
  it("connects every good host and reports each bad one, not first-error-wins", async () => {
    const deadPort = await freePort();
    const targets: SshTarget[] = [
      target({ alias: "c" }),
      target({ alias: "c-worker1", identityFile: join(dir, "id_ed25519") }),
      target({ alias: "c-worker2", port: deadPort }),
      target({ alias: "c-worker3", identityFile: join(dir, "id_wrong") }),
      target({ alias: "c-worker4" }),
    ];
    const results = await connectAll(targets, { concurrency: 2, timeoutMs: 5_000 });
    try {
      expect(results.map((r) => [r.host, r.kind, r.kind === "error" ? r.stage : ""])).toEqual([
        ["c", "ok", ""],
        ["c-worker1", "ok", ""],
        ["c-worker2", "error", "connect"],
        ["c-worker3", "error", "auth"],
        ["c-worker4", "ok", ""],
      ]);
      for (const r of results) {
        if (r.kind === "ok") expect((await r.session.exec("echo $((6*7))")).stdout).toBe("42\n");
        else expect(r.error.host).toBe(r.host);
      }
    } finally {
      await closeSessions(results.flatMap((r) => (r.kind === "ok" ? [r.session] : [])));
    }
  });

  it("reports every host as cancelled when the signal has aborted", async () => {
    const results = await connectAll([target({ alias: "a" }), target({ alias: "b" })], { signal: AbortSignal.abort() });
    expect(results.map((r) => r.kind === "error" && r.error.reason)).toEqual(["cancelled", "cancelled"]);
  });

  it("returns an empty list for no targets", async () => {
    expect(await connectAll([])).toEqual([]);
  });
});

describe("closing", () => {
  it("leaves no sockets, timers or sshd sessions behind once sessions are closed", async () => {
    expect(await eventually(async () => (await sshdChildren()) === "")).toBe(true);
    const sockets = countResources("TCPSocketWrap");
    const timers = countResources("Timeout");
    const results = await connectAll([target({ alias: "a" }), target({ alias: "b" }), target({ alias: "c" })], { timeoutMs: 5_000 });
    const sessions = results.flatMap((r) => (r.kind === "ok" ? [r.session] : []));
    expect(sessions).toHaveLength(3);
    for (const s of sessions) {
      await s.exec("true");
      await httpViaSsh(s, "127.0.0.1", httpPort, { path: "/", timeoutMs: 5_000 });
    }
    const fwd = await startLocalForward({
      session: sessions[0] ?? (await connect()),
      destHost: "127.0.0.1",
      destPort: httpPort,
      localPort: 0,
    });
    await plainGet(fwd.port, "/");
    expect((await sshdChildren()).trim().split("\n")).toHaveLength(3);
    await fwd.close();
    await closeSessions(sessions);
    expect(sessions.every((s) => s.closed)).toBe(true);
    expect(await eventually(() => countResources("TCPSocketWrap") <= sockets && countResources("Timeout") <= timers)).toBe(true);
    expect(await eventually(async () => (await sshdChildren()) === "")).toBe(true);
  });
});
