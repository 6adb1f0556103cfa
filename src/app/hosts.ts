// SSH sessions to the hosts recorded in a deployment's state (status, logs, proxy, restart, down).
import { closeSessions, connectAll } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import type { SshTarget } from "../core/ssh-target.js";
import type { DeploymentState, HostRecord, ReplicaState } from "../core/state.js";
import { OperationError, UsageError } from "../errors.js";
import type { AppContext } from "./context.js";

export interface HostSessions {
  sessions: Map<string, HostSession>;
  unreachable: { host: HostRecord; message: string }[];
  close(): Promise<void>;
}

export async function sessionsFor(ctx: AppContext, hosts: readonly HostRecord[], timeoutMs = 15_000): Promise<HostSessions> {
  const results = await connectAll(
    hosts.map(
      (h): SshTarget => ({
        alias: h.sshAlias,
        hostName: h.externalIp,
        user: h.user,
        port: h.port,
        identityFile: h.identityFile,
        proxyCommand: h.proxyCommand,
      }),
    ),
    { concurrency: 16, timeoutMs, signal: ctx.signal },
  );
  const sessions = new Map<string, HostSession>();
  const unreachable: HostSessions["unreachable"] = [];
  results.forEach((r, i) => {
    const host = hosts[i];
    if (!host) return;
    if (r.kind === "ok") sessions.set(r.host, r.session);
    else unreachable.push({ host, message: r.error.message });
  });
  return { sessions, unreachable, close: () => closeSessions([...sessions.values()]) };
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
