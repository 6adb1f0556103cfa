// SSH sessions to the hosts recorded in a deployment's state (status, logs, proxy, restart, down), each
// checked against the host keys pinned for it.
import { closeSessions, connectAll } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import type { SshTarget } from "../core/ssh-target.js";
import type { DeploymentState, HostRecord, ReplicaState } from "../core/state.js";
import { OperationError, type SshError, UsageError } from "../errors.js";
import type { AppContext } from "./context.js";
import { type FirstUse, firstUseNotice, hostKeyChangedError, pinFirstUse, recordedPolicy, withPinsOnDisk } from "./host-keys.js";

export interface HostSessions<H extends HostRecord = HostRecord> {
  sessions: Map<string, HostSession>;
  /** The hosts asked for, with the keys they were checked against, or trusted on first use in this call: for further connections. */
  hosts: H[];
  unreachable: { host: H; message: string }[];
  close(): Promise<void>;
}

export interface SessionOptions {
  timeoutMs?: number;
  /**
   * A host whose key is not the pinned one: fail the whole call (the default: the command must not go on
   * as if the host were merely down), or count it unreachable (down and --recreate, which remove the hosts).
   */
  onHostKeyChanged?: "throw" | "skip";
}

/** Sessions to hosts of deployment `name` (any of its replicas), each host's key checked before anything is sent. */
export async function sessionsFor<H extends HostRecord>(
  ctx: AppContext,
  name: string,
  asked: readonly H[],
  opts: SessionOptions = {},
): Promise<HostSessions<H>> {
  const hosts = withPinsOnDisk(ctx, name, asked);
  const results = await connectAll(
    hosts.map(
      (h): SshTarget => ({
        alias: h.sshAlias,
        hostName: h.externalIp,
        user: h.user,
        port: h.port,
        identityFile: h.identityFile,
        proxyCommand: h.proxyCommand,
        hostKeys: recordedPolicy(h),
      }),
    ),
    { concurrency: 16, timeoutMs: opts.timeoutMs ?? 15_000, signal: ctx.signal },
  );
  const sessions = new Map<string, HostSession>();
  const unreachable: HostSessions<H>["unreachable"] = [];
  const keyChanged: SshError[] = [];
  const learned: (FirstUse & { host: H })[] = [];
  results.forEach((r, i) => {
    const host = hosts[i];
    if (!host) return;
    if (r.kind === "ok") {
      sessions.set(r.host, r.session);
      if (!host.hostKeys?.length && r.session.hostKey) {
        learned.push({
          host,
          alias: host.sshAlias,
          key: r.session.hostKey,
          why: "the state was written before tpu-deploy pinned host keys",
        });
      }
    } else {
      if (r.error.reason === "host-key") keyChanged.push(r.error);
      unreachable.push({ host, message: r.error.message });
    }
  });
  if (keyChanged.length > 0) {
    const err = hostKeyChangedError(name, keyChanged);
    if (opts.onHostKeyChanged !== "skip") {
      await closeSessions([...sessions.values()]);
      throw err;
    }
    ctx.report.warn(`${err.message}; not contacting ${keyChanged.length === 1 ? "it" : "them"}`);
  }
  if (learned.length > 0) {
    // A state written before tpu-deploy pinned host keys: trust these now, and pin them.
    ctx.report.warn(firstUseNotice(learned));
    pinFirstUse(ctx, name, learned);
  }
  const pinned = new Map(learned.map((l) => [l.host, l.key]));
  return {
    sessions,
    hosts: hosts.map((h) => {
      const key = pinned.get(h);
      return key ? { ...h, hostKeys: [key], hostKeysFrom: "first-use" as const } : h;
    }),
    unreachable,
    close: () => closeSessions([...sessions.values()]),
  };
}

export function requireState(ctx: AppContext, name: string): DeploymentState {
  const state = ctx.store.read(name);
  if (!state) {
    const known = ctx.store.list();
    throw new OperationError("not_found", `no deployment named ${name}`, {
      hint: known.length > 0 ? `known deployments: ${known.join(", ")}` : "tpu-deploy up creates one",
    });
  }
  return state;
}

/** The replicas of a deployment (one, or the one --replica names), each with hosts to talk to. */
export function requireReplicas(state: DeploymentState, only?: number): ReplicaState[] {
  const chosen = only === undefined ? state.replicas : state.replicas.filter((r) => r.replica === only);
  if (only !== undefined && chosen.length === 0) {
    throw new UsageError(`${state.name} has no replica ${only}`, {
      hint: `its replicas: ${state.replicas.map((r) => r.replica).join(", ")}`,
    });
  }
  const withHosts = chosen.filter((r) => r.hosts.length > 0);
  if (withHosts.length === 0) {
    throw new OperationError(
      "not_found",
      `${state.name} has no hosts yet (${chosen.map((r) => `replica ${r.replica}: ${r.phase}`).join(", ")})`,
      {
        hint: `run tpu-deploy up to finish launching (tpu-deploy status ${state.name} shows where it stopped)`,
      },
    );
  }
  return withHosts;
}
