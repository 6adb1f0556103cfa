// The only module that touches ssh2. One connection per host for the whole run; every step has a
// deadline and honours the run's AbortSignal; library errors become SshError here, at the edge.
import { randomBytes } from "node:crypto";
import { getEventListeners, getMaxListeners, setMaxListeners } from "node:events";
import { readFile } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { createServer, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Client, ConnectConfig } from "ssh2";
import type { SshTarget } from "../core/ssh-target.js";
import { SshError, type SshFailure, type SshStage } from "../errors.js";

export interface StepLimits {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ConnectOptions extends StepLimits {
  keepaliveIntervalMs?: number;
}

export interface ExecOptions extends StepLimits {
  stdin?: string | Buffer;
  /** Streams stdout as it arrives (decoded as UTF-8 across chunk boundaries), e.g. for `logs -f`. */
  onStdout?: (text: string) => void;
}

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

export interface HostSession {
  readonly host: string;
  readonly target: SshTarget;
  readonly closed: boolean;
  exec(cmd: string, opts?: ExecOptions): Promise<ExecResult>;
  forwardOut(destHost: string, destPort: number, opts?: StepLimits): Promise<Duplex>;
  close(): Promise<void>;
}

export type ConnectResult =
  | { kind: "ok"; host: string; session: HostSession }
  | { kind: "error"; host: string; stage: SshStage; error: SshError };

export interface HttpViaSshRequest extends StepLimits {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface HttpViaSshResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

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

const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
const DEFAULT_EXEC_TIMEOUT_MS = 600_000;
const DEFAULT_FORWARD_TIMEOUT_MS = 30_000;
// SkyPilot's own ssh options use ServerAliveInterval=5, ServerAliveCountMax=3.
const DEFAULT_KEEPALIVE_MS = 5_000;
const KEEPALIVE_COUNT_MAX = 3;
const CLOSE_GRACE_MS = 2_000;
const KILL_TIMEOUT_MS = 5_000;

export async function connectHost(target: SshTarget, opts: ConnectOptions = {}): Promise<HostSession> {
  const host = target.alias;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (opts.signal?.aborted === true) throw cancelled(host, "connect", opts.signal.reason);
  let privateKey: Buffer;
  try {
    privateKey = await readFile(target.identityFile);
  } catch (cause) {
    throw new SshError({
      host,
      stage: "auth",
      cause,
      message: `cannot read the SSH key ${target.identityFile}`,
      hint: "SkyPilot writes the cluster's key on `sky status`; run it, or fix the IdentityFile line in ~/.sky/generated/ssh/<cluster>.",
    });
  }
  const { Client: SshClient } = await import("ssh2");
  const client = new SshClient();
  const session = new Ssh2HostSession(target, client);
  const where = `${target.user}@${target.hostName}:${target.port}`;
  let ready = false;
  try {
    await runStep<void>(host, "connect", `SSH connection to ${where}`, { timeoutMs, signal: opts.signal }, (step) => {
      client.once("ready", () => step.resolve());
      session.onConnectError = (err) => step.reject(connectError(target, err, timeoutMs));
      session.onConnectClose = () =>
        step.reject(
          new SshError({
            host,
            stage: "connect",
            reason: "lost",
            message: `${where} closed the connection during the SSH handshake`,
            hint: "sshd on the host may be restarting or refusing connections (MaxStartups); retry in a moment.",
          }),
        );
      const config: ConnectConfig = {
        host: target.hostName,
        port: target.port,
        username: target.user,
        privateKey,
        authHandler: ["publickey"], // IdentitiesOnly yes: this key and nothing else
        readyTimeout: timeoutMs,
        keepaliveInterval: opts.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
        keepaliveCountMax: KEEPALIVE_COUNT_MAX,
        // SkyPilot's config says StrictHostKeyChecking no and UserKnownHostsFile=/dev/null: TPU hosts get
        // fresh host keys on every (re)launch, so there is nothing to pin them to.
        hostVerifier: () => true,
      };
      try {
        client.connect(config); // throws at once on a key it cannot parse
      } catch (err) {
        step.reject(connectError(target, err instanceof Error ? err : new Error(String(err)), timeoutMs));
      }
    });
    ready = true;
    return session;
  } finally {
    session.onConnectError = undefined;
    session.onConnectClose = undefined;
    if (!ready) client.destroy();
  }
}

export async function connectAll(
  targets: readonly SshTarget[],
  opts: ConnectOptions & { concurrency?: number } = {},
): Promise<ConnectResult[]> {
  const results: ConnectResult[] = new Array<ConnectResult>(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < targets.length; i = next++) {
      const target = targets[i];
      if (target === undefined) continue;
      try {
        results[i] = { kind: "ok", host: target.alias, session: await connectHost(target, opts) };
      } catch (err) {
        const error =
          err instanceof SshError
            ? err
            : new SshError({
                host: target.alias,
                stage: "connect",
                cause: err,
                message: `unexpected failure while connecting: ${errorMessage(err)}`,
                hint: "This looks like a bug in tpu-deploy; rerun with --verbose and report it.",
              });
        results[i] = { kind: "error", host: target.alias, stage: error.stage, error };
      }
    }
  };
  const width = Math.max(1, Math.min(opts.concurrency ?? 8, targets.length));
  await Promise.all(Array.from({ length: width }, worker));
  return results;
}

export async function closeSessions(sessions: readonly HostSession[]): Promise<void> {
  await Promise.allSettled(sessions.map((s) => s.close()));
}

export async function httpViaSsh(
  session: HostSession,
  destHost: string,
  destPort: number,
  req: HttpViaSshRequest,
): Promise<HttpViaSshResponse> {
  const method = req.method ?? "GET";
  const started = Date.now();
  const timeoutMs = req.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
  const channel = await session.forwardOut(destHost, destPort, { timeoutMs, signal: req.signal });
  try {
    const what = `HTTP ${method} ${req.path} to ${destHost}:${destPort}`;
    const remaining = Math.max(1, timeoutMs - (Date.now() - started));
    return await runStep<HttpViaSshResponse>(session.host, "forward", what, { timeoutMs: remaining, signal: req.signal }, (step) => {
      const fail = (cause: Error): void =>
        step.reject(
          new SshError({
            host: session.host,
            stage: "forward",
            cause,
            message: `${what} failed: ${cause.message}`,
            hint: "The server closed the connection or answered with something that is not HTTP/1.1; check its log.",
          }),
        );
      const request = httpRequest({
        method,
        path: req.path,
        host: destHost,
        port: destPort,
        headers: { ...req.headers, connection: "close" },
        createConnection: () => asSocketLike(channel),
      });
      step.onStop(() => request.destroy());
      request.on("error", fail);
      request.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", fail);
        res.on("end", () =>
          step.resolve({ status: res.statusCode ?? 0, headers: flattenHeaders(res.headers), body: Buffer.concat(chunks).toString("utf8") }),
        );
      });
      request.end(req.body);
    });
  } finally {
    channel.destroy();
  }
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

class Ssh2HostSession implements HostSession {
  readonly host: string;
  onConnectError: ((err: Error) => void) | undefined;
  onConnectClose: (() => void) | undefined;
  private socketClosed = false;
  private lastError: Error | undefined;

  constructor(
    readonly target: SshTarget,
    private readonly client: Client,
  ) {
    this.host = target.alias;
    // Without a listener, an 'error' (keepalive timeout, reset) would crash the process.
    client.on("error", (err: Error) => {
      this.lastError = err;
      this.onConnectError?.(err);
    });
    client.on("close", () => {
      this.socketClosed = true;
      this.onConnectClose?.();
    });
  }

  get closed(): boolean {
    return this.socketClosed;
  }

  async exec(cmd: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    // sshd starts every command in a new session (setsid), so the shell's $$ is the process group of
    // everything the command starts. It is reported on stderr (a per-call marker, stripped again) so a
    // timeout or cancel can kill the whole group. ssh2 cannot send the SSH "signal" request after stdin
    // has ended, and sshd ignores that request for root logins anyway.
    const marker = `tpd-pgid-${randomBytes(6).toString("hex")}:`;
    const run: { pgid?: number; exited: boolean } = { exited: false };
    try {
      return await runStep<ExecResult>(this.host, "exec", "command", { timeoutMs, signal: opts.signal }, (step) => {
        this.assertOpen("exec", "run a command");
        this.client.exec(`printf '${marker}%s\\n' "$$" >&2\n${cmd}`, (err, channel) => {
          if (err !== undefined && err !== null) {
            step.reject(this.channelError("exec", "could not start a command", err));
            return;
          }
          step.onStop(() => channel.close());
          const stdout: Buffer[] = [];
          const stderr: Buffer[] = [];
          let head = "";
          let exit: { code: number | null; signal?: string } = { code: null };
          const decoder = opts.onStdout ? new StringDecoder("utf8") : undefined;
          channel.on("data", (b: Buffer) => {
            stdout.push(b);
            if (decoder) opts.onStdout?.(decoder.write(b));
          });
          channel.stderr.on("data", (b: Buffer) => {
            stderr.push(b);
            if (run.pgid === undefined && head.length < 65_536) {
              head += b.toString("latin1");
              const m = new RegExp(`${marker}(\\d+)\n`).exec(head);
              if (m?.[1] !== undefined) run.pgid = Number(m[1]);
            }
          });
          channel.on("exit", (code: number | null, signal?: string) => {
            run.exited = true;
            exit = signal === undefined || signal === null ? { code } : { code, signal };
          });
          channel.on("error", (e: Error) => step.reject(this.channelError("exec", "command channel failed", e)));
          channel.on("close", () => {
            if (!run.exited && this.socketClosed) {
              step.reject(this.lost("while a command was running"));
              return;
            }
            const errText = Buffer.concat(stderr)
              .toString("utf8")
              .replace(new RegExp(`${marker}\\d+\n`), "");
            step.resolve({ ...exit, stdout: Buffer.concat(stdout).toString("utf8"), stderr: errText });
          });
          // stdin may carry secrets: it is written to the channel and nowhere else.
          if (opts.stdin === undefined) channel.end();
          else channel.end(opts.stdin);
        });
      });
    } catch (err) {
      const stopped = err instanceof SshError && (err.stage === "timeout" || err.reason === "cancelled");
      if (stopped && !run.exited && run.pgid !== undefined) await this.killGroup(run.pgid);
      throw err;
    }
  }

  private async killGroup(pgid: number): Promise<void> {
    try {
      await this.exec(`kill -KILL -- -${pgid} 2>/dev/null`, { timeoutMs: KILL_TIMEOUT_MS });
    } catch {
      // best effort: the connection may be the thing that failed; the caller still gets the original error
    }
  }

  forwardOut(destHost: string, destPort: number, opts: StepLimits = {}): Promise<Duplex> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
    const what = `forward to ${destHost}:${destPort}`;
    return runStep<Duplex>(this.host, "forward", what, { timeoutMs, signal: opts.signal }, (step) => {
      this.assertOpen("forward", `open a ${what}`);
      this.client.forwardOut("127.0.0.1", 0, destHost, destPort, (err, channel) => {
        if (err !== undefined && err !== null) {
          step.reject(this.forwardError(destHost, destPort, err));
        } else if (step.settled) {
          channel.destroy(); // opened after the deadline or the cancel: nobody will read it
        } else {
          step.resolve(channel);
        }
      });
    });
  }

  async close(): Promise<void> {
    if (this.socketClosed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.client.destroy();
        resolve();
      }, CLOSE_GRACE_MS);
      this.client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
  }

  private assertOpen(stage: SshStage, doing: string): void {
    if (this.socketClosed) throw this.lost(`before it could ${doing}`, stage);
  }

  private lost(when: string, stage: SshStage = "exec"): SshError {
    return new SshError({
      host: this.host,
      stage,
      reason: "lost",
      cause: this.lastError,
      message: `the SSH connection to ${this.target.hostName} is gone (${when})${this.lastError ? `: ${this.lastError.message}` : ""}`,
      hint: "The host may have been preempted or rebooted; run `sky status --refresh` and retry.",
    });
  }

  private channelError(stage: SshStage, what: string, err: Error): SshError {
    if (this.socketClosed) return this.lost(`${what}`, stage);
    return new SshError({
      host: this.host,
      stage,
      cause: err,
      reason: openFailureReason(err),
      message: `${what}: ${err.message}`,
      hint: "sshd may have hit its MaxSessions limit or be shutting down; retry with fewer parallel commands.",
    });
  }

  private forwardError(destHost: string, destPort: number, err: Error): SshError {
    if (this.socketClosed) return this.lost(`while opening a forward to ${destHost}:${destPort}`, "forward");
    const reason = openFailureReason(err);
    const hint =
      reason === "refused"
        ? `Nothing listens on ${destHost}:${destPort} as seen from ${this.host}; the server may still be starting, or it died (check its log).`
        : reason === "prohibited"
          ? `sshd on ${this.host} does not allow TCP forwarding (AllowTcpForwarding).`
          : reason === "unreachable"
            ? `${this.host} cannot reach ${destHost}; check the address (it must be one the host itself can reach, e.g. its internal IP).`
            : `Check that ${destHost}:${destPort} is reachable from ${this.host}.`;
    return new SshError({
      host: this.host,
      stage: "forward",
      cause: err,
      ...(reason === undefined ? {} : { reason }),
      message: `cannot open a connection to ${destHost}:${destPort} through SSH: ${err.message}`,
      hint,
    });
  }
}

interface StepControl<T> {
  resolve(value: T): void;
  reject(error: SshError): void;
  // Runs once when the step settles, however it settles (at once if it already has).
  onStop(fn: () => void): void;
  readonly settled: boolean;
}

// One deadline and one cancel for a callback-style operation; cleanups run before the promise settles.
function runStep<T>(
  host: string,
  stage: SshStage,
  what: string,
  limits: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined },
  body: (step: StepControl<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const stops: (() => void)[] = [];
    let timer: NodeJS.Timeout | undefined;
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      limits.signal?.removeEventListener("abort", onAbort);
      for (const fn of stops.reverse()) {
        try {
          fn();
        } catch {
          // best effort: a cleanup failing must not hide the step's own outcome
        }
      }
      settle();
    };
    const onAbort = (): void => finish(() => reject(cancelled(host, stage, limits.signal?.reason)));
    const step: StepControl<T> = {
      resolve: (value) => finish(() => resolve(value)),
      reject: (error) => finish(() => reject(error)),
      onStop: (fn) => (settled ? fn() : void stops.push(fn)),
      get settled() {
        return settled;
      },
    };
    if (limits.signal?.aborted === true) {
      onAbort();
      return;
    }
    if (limits.signal !== undefined) {
      allowOneMoreAbortListener(limits.signal);
      limits.signal.addEventListener("abort", onAbort, { once: true });
    }
    if (limits.timeoutMs !== undefined) {
      const ms = limits.timeoutMs;
      timer = setTimeout(
        () =>
          finish(() =>
            reject(
              new SshError({
                host,
                stage: "timeout",
                message: `${what} timed out after ${ms} ms`,
                hint:
                  stage === "exec"
                    ? "The command was killed on the host; raise the timeout if it needs longer."
                    : "The host or the network is slow or drops packets; retry, or raise the timeout.",
              }),
            ),
          ),
        ms,
      );
    }
    try {
      body(step);
    } catch (err) {
      step.reject(
        err instanceof SshError
          ? err
          : new SshError({
              host,
              stage,
              cause: err,
              message: `${what} failed: ${errorMessage(err)}`,
              hint: "Retry; if it keeps failing, rerun with --verbose.",
            }),
      );
    }
  });
}

// Every host's steps share the run's one signal and each removes its listener when it settles, so
// dozens at once on a large slice are expected, not a leak; Node would warn from the 11th on.
function allowOneMoreAbortListener(signal: AbortSignal): void {
  const max = getMaxListeners(signal);
  const count = getEventListeners(signal, "abort").length;
  if (max !== 0 && count + 1 > max) setMaxListeners(count + 1, signal);
}

function cancelled(host: string, stage: SshStage, cause: unknown): SshError {
  return new SshError({ host, stage, reason: "cancelled", cause, message: "cancelled", hint: "The run was interrupted." });
}

function connectError(target: SshTarget, err: Error, timeoutMs: number): SshError {
  const host = target.alias;
  const where = `${target.hostName}:${target.port}`;
  const level = (err as Error & { level?: string }).level;
  const code = (err as Error & { code?: string }).code;
  if (level === "client-authentication") {
    return new SshError({
      host,
      stage: "auth",
      cause: err,
      message: `${where} refused the key ${target.identityFile} for user ${target.user}`,
      hint: "Run `sky status` so SkyPilot rewrites the cluster's key and SSH config, and check that the cluster is yours.",
    });
  }
  if (level === "client-timeout") {
    return new SshError({
      host,
      stage: "timeout",
      cause: err,
      message: `no SSH handshake with ${where} within ${timeoutMs} ms`,
      hint: "The host may be booting, overloaded, or behind a firewall that drops packets; retry, or raise the timeout.",
    });
  }
  if (level === undefined && /privateKey|private key|key format|passphrase/i.test(err.message)) {
    return new SshError({
      host,
      stage: "auth",
      cause: err,
      message: `cannot use the SSH key ${target.identityFile}: ${err.message}`,
      hint: "IdentityFile must be an unencrypted private key (SkyPilot's own key is); run `sky status` to rewrite it.",
    });
  }
  const reason: SshFailure | undefined =
    code === "ECONNREFUSED" ? "refused" : code === "EHOSTUNREACH" || code === "ENETUNREACH" ? "unreachable" : undefined;
  return new SshError({
    host,
    stage: "connect",
    cause: err,
    ...(reason === undefined ? {} : { reason }),
    message: `cannot connect to ${where}: ${err.message}`,
    hint:
      reason === "refused"
        ? "Nothing accepts SSH there: the host may be rebooting or preempted. Run `sky status --refresh`."
        : reason === "unreachable"
          ? "This machine has no route to the host; check your network, or whether the cluster uses internal IPs."
          : "Check that the host is up (`sky status --refresh`) and reachable on its SSH port.",
  });
}

// SSH_MSG_CHANNEL_OPEN_FAILURE: reason 1 is "administratively prohibited"; for 2 (connect failed)
// OpenSSH puts strerror() of its connect() into the description.
function openFailureReason(err: Error): SshFailure | undefined {
  const code = (err as Error & { reason?: unknown }).reason;
  if (code === 1) return "prohibited";
  if (/connection refused/i.test(err.message)) return "refused";
  if (/no route to host|network is unreachable/i.test(err.message)) return "unreachable";
  return undefined;
}

// node:http only needs a Duplex, but pokes at a few socket methods an SSH channel lacks.
function asSocketLike(channel: Duplex): Duplex {
  const noop = (): void => undefined;
  return Object.assign(channel, { setKeepAlive: noop, setNoDelay: noop, setTimeout: noop, ref: noop, unref: noop });
}

function flattenHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
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
