// `tpu-deploy proxy`: one local endpoint for a deployment's servers, through SSH (no public port). Each
// replica's head (its rank 0) is one upstream over one SSH connection, reused for every request and
// reconnected when it drops. The proxy adds server.apiKeySecret's key to requests that lack it, so it
// answers local clients only and redacts every secret it knows from what it returns.
import type { Duplex } from "node:stream";
import { httpProbe } from "../adapters/http-proxy/exchange.js";
import type { ListenOn } from "../adapters/http-proxy/listen.js";
import type { Upstream } from "../adapters/http-proxy/pool.js";
import { startHttpProxy } from "../adapters/http-proxy/proxy.js";
import { knownSecrets } from "../adapters/secrets.js";
import type { HostSession } from "../adapters/ssh/session.js";
import { MIN_SECRET_LENGTH } from "../core/redact.js";
import type { DeploymentState, HostRecord } from "../core/state.js";
import { ConfigError, OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { isHostKeyChange } from "./host-keys.js";
import { requireReplicas, requireState, sessionsFor } from "./hosts.js";

export interface OpenProxy {
  url: string;
  socketPath?: string;
  /** Where it leads, for people: `NAME rank 0 (10.0.0.2:30000)`, one per replica. */
  targets: string[];
  /** Requests each replica answered so far, by target. */
  answered(): { target: string; answered: number }[];
  close(): Promise<void>;
}

const FORWARD_TIMEOUT_MS = 10_000;
const PROBE_INTERVAL_MS = 5_000;
// An SSH channel plus one HTTP exchange; generous for a ProxyCommand hop, short next to a request.
const PROBE_TIMEOUT_MS = 5_000;

export async function openProxy(ctx: AppContext, name: string, opts: { listen: ListenOn }): Promise<OpenProxy> {
  const state = requireState(ctx, name);
  const heads = replicaHeads(state);
  const { apiKey, values } = proxySecrets(ctx, state);
  const port = state.config.server.port;
  const recorded = recordedHeads(ctx, name);
  const links = heads.map((h) => ({ ...h, link: new HeadLink(ctx, name, () => recorded(h.replica)) }));
  const closeLinks = async (): Promise<void> => {
    await Promise.all(links.map((l) => l.link.close()));
  };
  // Every head is tried now, so a wrong host or key fails here rather than on the first request.
  const reached = await Promise.allSettled(links.map((l) => l.link.session()));
  // A head whose host key changed is not "unreachable for now": the proxy would carry the API key to the
  // other replicas while an impostor sits at that address. Say so and stop.
  const keyChanged = reached.find((r): r is PromiseRejectedResult => r.status === "rejected" && isHostKeyChange(r.reason));
  if (keyChanged) {
    await closeLinks();
    throw keyChanged.reason;
  }
  if (reached.every((r) => r.status === "rejected")) {
    await closeLinks();
    const why = reached.map((r) => (r.status === "rejected" && r.reason instanceof Error ? r.reason.message : "")).join("; ");
    throw new OperationError("ssh_failed", `cannot reach the head of any replica of ${name}: ${why}`);
  }
  const upstreams: Upstream[] = links.map(({ id, link }, i) => {
    if (reached[i]?.status === "rejected") ctx.report.warn(`${id} is not reachable now; requests go to the other replicas until it is`);
    const open = (): Promise<Duplex> => link.open(port);
    return { id, open, probe: (signal) => httpProbe(open, "/health", signal) };
  });
  try {
    const proxy = await startHttpProxy({
      upstreams,
      listen: opts.listen,
      headers: apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` },
      secrets: values,
      probeIntervalMs: PROBE_INTERVAL_MS,
      probeTimeoutMs: PROBE_TIMEOUT_MS,
      onEvent: (e) =>
        e.kind === "out"
          ? ctx.report.warn(`${e.id} is out of rotation (${e.reason}); probing it`)
          : ctx.report.info(`${e.id} answers again`),
    });
    return {
      url: proxy.url,
      ...(proxy.socketPath === undefined ? {} : { socketPath: proxy.socketPath }),
      targets: heads.map((h) => `${h.id} at ${h.head.internalIp}:${port}`),
      answered: () => proxy.stats().map((st) => ({ target: st.id, answered: st.answered })),
      close: async () => {
        await proxy.close();
        await closeLinks();
      },
    };
  } catch (err) {
    await closeLinks();
    throw err;
  }
}

/** One upstream per replica that has hosts: its head, rank 0. */
function replicaHeads(state: DeploymentState): { id: string; replica: number; head: HostRecord }[] {
  return requireReplicas(state).flatMap((r) => {
    const rank0 = r.hosts.find((h) => h.rank === 0);
    return rank0 ? [{ id: `replica ${r.replica} (${r.cluster})`, replica: r.replica, head: rank0 }] : [];
  });
}

// How stale the proxy's view of the state file may be: a relaunched replica's new head is picked up within this.
const HEADS_TTL_MS = 2_000;

/**
 * Each replica's head as the state file has it now, so a replica that `relaunch` brought back on new hosts
 * is followed without restarting the proxy. A replica being relaunched (no hosts, or not serving yet) has none.
 */
function recordedHeads(ctx: AppContext, name: string): (replica: number) => HostRecord | undefined {
  let at = 0;
  let heads = new Map<number, HostRecord>();
  return (replica) => {
    if (Date.now() - at > HEADS_TTL_MS) {
      at = Date.now();
      try {
        const s = ctx.store.read(name);
        heads = new Map(
          (s?.replicas ?? []).flatMap((r) => {
            const rank0 = r.phase === "serving" || r.phase === "starting" ? r.hosts.find((h) => h.rank === 0) : undefined;
            return rank0 ? [[r.replica, rank0] as const] : [];
          }),
        );
      } catch (err) {
        // Unreadable for a moment (a write in flight elsewhere is atomic, so this is rare): keep the last view.
        ctx.report.debug(`proxy: could not re-read ${name}'s state: ${(err as Error).message}`);
      }
    }
    return heads.get(replica);
  };
}

/** The API key to add, and every secret value known here, to redact from answers. */
function proxySecrets(ctx: AppContext, state: DeploymentState): { apiKey: string | undefined; values: string[] } {
  const keyName = state.config.server.apiKeySecret;
  const found = knownSecrets(state.config, ctx.env);
  for (const n of [...new Set([...(keyName ? [keyName] : []), ...state.config.server.secrets])]) {
    if (found.has(n)) continue;
    if (n === keyName) ctx.report.warn(`${n} has no value here: requests through the proxy must send their own Authorization header`);
    else ctx.report.debug(`${n} has no value here, so the proxy cannot redact it`);
  }
  const short = [...found].filter(([, v]) => [...v].length < MIN_SECRET_LENGTH).map(([n]) => n);
  if (short.length > 0) {
    throw new ConfigError(
      short.map((n) => ({
        path: "server.secrets",
        message: `${n} is shorter than ${MIN_SECRET_LENGTH} characters: the proxy cannot keep it out of answers safely; use a longer value`,
      })),
    );
  }
  return { apiKey: keyName ? found.get(keyName) : undefined, values: [...found.values()] };
}

/**
 * The SSH connection to one replica's head: opened once, shared by every request, reopened if it drops,
 * and moved when the state file names another head (the replica was relaunched).
 */
class HeadLink {
  private current: { session: HostSession; host: HostRecord } | undefined;
  private connecting: Promise<{ session: HostSession; host: HostRecord }> | undefined;
  private closed = false;

  constructor(
    private readonly ctx: AppContext,
    private readonly name: string,
    private readonly head: () => HostRecord | undefined,
  ) {}

  async open(destPort: number): Promise<Duplex> {
    const { session, host } = await this.session();
    return await session.forwardOut(host.internalIp, destPort, { timeoutMs: FORWARD_TIMEOUT_MS });
  }

  session(): Promise<{ session: HostSession; host: HostRecord }> {
    if (this.closed) return Promise.reject(new OperationError("ssh_failed", "the proxy closed its connections"));
    const host = this.head();
    if (!host) return Promise.reject(new OperationError("ssh_failed", "no head recorded (the replica is being relaunched)"));
    const cur = this.current;
    if (cur && !cur.session.closed && sameHost(cur.host, host)) return Promise.resolve(cur);
    if (cur && !sameHost(cur.host, host)) {
      this.current = undefined;
      void cur.session.close().catch(() => undefined);
    }
    this.connecting ??= sessionsFor(this.ctx, this.name, [host])
      .then(async (hs) => {
        const s = hs.sessions.get(host.sshAlias);
        if (!s) throw new OperationError("ssh_failed", `cannot reach ${host.sshAlias}: ${hs.unreachable[0]?.message ?? "no session"}`);
        await turnOffNagleOnHost(s);
        this.current = { session: s, host };
        return this.current;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting?.catch(() => undefined);
    await this.current?.session.close();
  }
}

/**
 * sshd before OpenSSH 10.1 sets TCP_NODELAY on a connection only once a session runs a command (session.c
 * do_exec_no_pty → packet.c ssh_packet_set_interactive); a connection that only forwards keeps Nagle on, and an
 * answer that reaches sshd in two parts (head, then body) waits for this side's delayed ACK, ~40 ms, on many
 * requests. One no-op command turns it off for the connection's lifetime. Best effort: forwarding works without.
 */
export async function turnOffNagleOnHost(session: HostSession): Promise<void> {
  await session.exec(":", { timeoutMs: PROBE_TIMEOUT_MS }).catch(() => undefined);
}

function sameHost(a: HostRecord, b: HostRecord): boolean {
  return a.externalIp === b.externalIp && a.internalIp === b.internalIp && a.sshAlias === b.sshAlias;
}
