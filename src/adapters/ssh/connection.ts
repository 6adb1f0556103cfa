// Connecting to the hosts: one connection per host for the whole run, at most `concurrency` handshakes
// at once, every host settled (not first-error-wins), and ssh2's connect errors translated into SshError.
// ssh2 is imported only inside connectHost, so commands that never connect (--help) never load it.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { Duplex } from "node:stream";
import pLimit from "p-limit";
import type { Algorithms, ConnectConfig } from "ssh2";
import { checkHostKey, describeHostKey, type HostKeyCheck, serverHostKeyAlgorithms } from "../../core/host-keys.js";
import { expandProxyCommand } from "../../core/ssh-config.js";
import type { SshTarget } from "../../core/ssh-target.js";
import { SshError, type SshFailure, type SshStage } from "../../errors.js";
import { type HostSession, Ssh2HostSession } from "./session.js";
import { cancelled, errorMessage, runStep, type StepLimits } from "./step.js";

export interface ConnectOptions extends StepLimits {
  keepaliveIntervalMs?: number;
}

export type ConnectResult =
  | { kind: "ok"; host: string; session: HostSession }
  | { kind: "error"; host: string; stage: SshStage; error: SshError };

const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
// SkyPilot's own ssh options use ServerAliveInterval=5, ServerAliveCountMax=3.
const DEFAULT_KEEPALIVE_MS = 5_000;
const KEEPALIVE_COUNT_MAX = 3;

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
  const proxy = target.proxyCommand ? proxySocket(target, target.proxyCommand) : undefined;
  if (proxy) client.once("close", () => proxy.stop());
  const session = new Ssh2HostSession(target, client);
  const where = `${target.user}@${target.hostName}:${target.port}`;
  // What the host offered when the check refused it: ssh2 then only says "Host denied (verification failed)".
  let refused: Extract<HostKeyCheck, { ok: false }> | undefined;
  let ready = false;
  try {
    await runStep<void>(host, "connect", `SSH connection to ${where}`, { timeoutMs, signal: opts.signal }, (step) => {
      client.once("ready", () => step.resolve());
      session.onConnectError = (err) => step.reject(refused ? hostKeyChanged(target, refused, err) : connectError(target, err, timeoutMs));
      session.onConnectClose = () =>
        step.reject(
          refused
            ? hostKeyChanged(target, refused)
            : new SshError({
                host,
                stage: "connect",
                reason: "lost",
                message: `${where} closed the connection during the SSH handshake`,
                hint: "sshd on the host may be restarting or refusing connections (MaxStartups); retry in a moment.",
              }),
        );
      const algorithms = serverHostKeyAlgorithms(target.hostKeys);
      const config: ConnectConfig = {
        host: target.hostName,
        port: target.port,
        username: target.user,
        privateKey,
        authHandler: ["publickey"], // IdentitiesOnly yes: this key and nothing else
        readyTimeout: timeoutMs,
        keepaliveInterval: opts.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
        keepaliveCountMax: KEEPALIVE_COUNT_MAX,
        // SkyPilot's config says StrictHostKeyChecking no; tpu-deploy checks anyway. The verifier runs before
        // ssh2 offers the private key or opens a channel, and ssh2 then checks that the host signed the
        // exchange with this key, so a host that fails here has been sent nothing.
        hostVerifier: (blob: Buffer) => {
          const r = checkHostKey(target.hostKeys, blob);
          if (r.ok) session.hostKey = r.key;
          else refused = r;
          return r.ok;
        },
        // Ask only for the pinned key types, or a host holding several keys may answer with an unpinned one.
        ...(algorithms ? { algorithms: { serverHostKey: algorithms as Algorithms["serverHostKey"] } } : {}),
        // ProxyCommand (gcp.ssh_proxy_command, Docker images): SSH over the command's stdin/stdout, as ssh does.
        ...(proxy ? { sock: proxy.sock } : {}),
      };
      try {
        client.connect(config); // throws at once on a key it cannot parse
      } catch (err) {
        step.reject(connectError(target, err instanceof Error ? err : new Error(String(err)), timeoutMs));
      }
    });
    ready = true;
    // SSH carries small request/response exchanges here (commands, HTTP through forwards): with Nagle on, a
    // packet waits for the previous one's ACK, which the host may delay ~40 ms. OpenSSH's own client turns it
    // off too (packet.c set_nodelay).
    client.setNoDelay(true);
    return session;
  } finally {
    session.onConnectError = undefined;
    session.onConnectClose = undefined;
    if (!ready) {
      client.destroy();
      proxy?.stop();
    }
  }
}

/** Runs the host's ProxyCommand under /bin/sh, as OpenSSH does, and speaks SSH over its stdio. */
function proxySocket(target: SshTarget, command: string): { sock: Duplex; stop(): void } {
  const line = expandProxyCommand(command, { host: target.hostName, port: target.port, user: target.user, alias: target.alias });
  const child = spawn("/bin/sh", ["-c", `exec ${line}`], { stdio: ["pipe", "pipe", "ignore"] });
  if (!child.stdout || !child.stdin) throw new Error("ProxyCommand has no stdio");
  const sock = Duplex.from({ readable: child.stdout, writable: child.stdin });
  child.on("error", (err) => sock.destroy(err));
  child.on("exit", () => sock.push(null));
  return {
    sock,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    },
  };
}

export async function connectAll(
  targets: readonly SshTarget[],
  opts: ConnectOptions & { concurrency?: number } = {},
): Promise<ConnectResult[]> {
  // p-limit accepts only a positive integer; this keeps a fractional or zero limit meaning what it did.
  const limit = pLimit(Math.max(1, Math.floor(Math.min(opts.concurrency ?? 8, targets.length))));
  // connectOne never rejects, so every host settles and map() keeps input order.
  return await limit.map(targets, (target) => connectOne(target, opts));
}

async function connectOne(target: SshTarget, opts: ConnectOptions): Promise<ConnectResult> {
  try {
    return { kind: "ok", host: target.alias, session: await connectHost(target, opts) };
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
    return { kind: "error", host: target.alias, stage: error.stage, error };
  }
}

export async function closeSessions(sessions: readonly HostSession[]): Promise<void> {
  await Promise.allSettled(sessions.map((s) => s.close()));
}

// Generic: the use cases, which know the deployment's name, replace it with one that names it.
const HOST_KEY_HINT =
  "Nothing was sent to it. Someone may be intercepting the connection, or the address now belongs to another machine. " +
  "If the hosts were re-created outside tpu-deploy, `tpu-deploy down NAME` and `tpu-deploy up` start again on fresh hosts whose keys are checked; otherwise treat it as a security incident.";

function hostKeyChanged(target: SshTarget, r: Extract<HostKeyCheck, { ok: false }>, cause?: Error, noneOffered = false): SshError {
  const policy = target.hostKeys;
  const from = policy.kind === "pinned" && policy.from === "tpu-api" ? "as the Cloud TPU API published it" : "pinned on first use";
  const expected = r.expected.map(describeHostKey).join(", ") || "no usable key";
  // No offered key: the host has none of the pinned types (ssh2: "no matching host key format"), or sent junk.
  const offered = r.offered ? describeHostKey(r.offered) : noneOffered ? "none of the pinned key types" : "an unreadable key";
  return new SshError({
    host: target.alias,
    stage: "connect",
    reason: "host-key",
    cause,
    message: `host key changed: ${target.hostName}:${target.port} offered ${offered}, expected ${expected} (${from})`,
    hint: HOST_KEY_HINT,
  });
}

function connectError(target: SshTarget, err: Error, timeoutMs: number): SshError {
  const host = target.alias;
  const where = `${target.hostName}:${target.port}`;
  const level = (err as Error & { level?: string }).level;
  const code = (err as Error & { code?: string }).code;
  if (target.hostKeys.kind === "pinned" && /no matching host key format/i.test(err.message)) {
    return hostKeyChanged(target, { ok: false, offered: undefined, expected: target.hostKeys.keys }, err, true);
  }
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
