// Finding every host of a cluster and its rank: SkyPilot's status and SSH config, then each host's TPU
// worker number and internal address from the Cloud TPU API (v6e) or the host's metadata server (v7).
import { z } from "zod";
import type { SkyClusterRecord } from "../adapters/sky.js";
import { skyHosts } from "../adapters/sky-ssh.js";
import { closeSessions, connectAll } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import { nodesOfCluster, type TpuNode } from "../adapters/tpu-api.js";
import type { Config } from "../core/config.js";
import { formatDuration } from "../core/duration.js";
import type { HostKey, HostKeyPolicy, HostKeySource } from "../core/host-keys.js";
import { assignRanks, type HostIdentity, isIpv4, joinWithTpuNodes, type RankedHost, type SkyHost } from "../core/ranks.js";
import { metadataCommand, sliceOfInstance } from "../core/remote.js";
import type { SshTarget } from "../core/ssh-target.js";
import { type HostRecord, hostIdentity } from "../core/state.js";
import { CloudApiError, OperationError, type SshError } from "../errors.js";
import type { AppContext } from "./context.js";
import { CONCURRENCY } from "./start.js";
import {
  type ApiKeys,
  discoveredPolicy,
  type FirstUse,
  firstUseNotice,
  hostKeyChangedError,
  hostKeysFromTpuApi,
  pinnedAfter,
  withPinsOnDisk,
} from "./host-keys.js";

// What the metadata probe prints (core/remote.ts METADATA_PY).
const metadataAnswer = z.object({
  workerId: z.number().int().nonnegative().nullable(),
  source: z.string().nullable(),
  internalIp: z.string().nullable(),
  instanceName: z.string(),
  tried: z.array(z.string()),
});

/** A ranked host with the host keys its connection was checked against (or trusted on first use). */
export interface DiscoveredHost extends RankedHost {
  hostKeys: HostKey[];
  hostKeysFrom: HostKeySource;
}

export interface Discovered {
  record: SkyClusterRecord;
  nameOnCloud: string;
  hosts: DiscoveredHost[];
  sessions: Map<string, HostSession>;
  source: "tpu-api" | "metadata";
  tpuNodes: TpuNode[];
  /** Hosts trusted on first use just now (already warned about); the caller records it in the history. */
  firstUse: FirstUse[];
}

export async function skyRecord(ctx: AppContext, name: string, opts: { refresh?: boolean } = {}): Promise<SkyClusterRecord | undefined> {
  const sky = await ctx.sky();
  const records = await sky.status([name], { verbose: true, refresh: opts.refresh ?? false, signal: ctx.signal });
  return records.find((r) => r.name === name);
}

/** `name`: the deployment, named in the error when a host's key is not the pinned one. */
export async function connectSessions(ctx: AppContext, name: string, targets: readonly SshTarget[]): Promise<Map<string, HostSession>> {
  // Handshakes are round trips to hosts far away: all of a 64-host slice's at once (one per host).
  const results = await connectAll(targets, { concurrency: CONCURRENCY, timeoutMs: 30_000, signal: ctx.signal });
  const sessions = new Map<string, HostSession>();
  const failures: string[] = [];
  const keyChanged: SshError[] = [];
  for (const r of results) {
    if (r.kind === "ok") sessions.set(r.host, r.session);
    else if (r.error.reason === "host-key") keyChanged.push(r.error);
    else failures.push(`${r.host}: ${r.error.message} (${r.error.hint})`);
  }
  if (failures.length > 0 || keyChanged.length > 0) {
    await closeSessions([...sessions.values()]);
    // A changed key is the one failure that must not read like "the host is down".
    if (keyChanged.length > 0) throw hostKeyChangedError(name, keyChanged);
    throw new OperationError(
      "ssh_failed",
      `cannot reach ${failures.length} of ${targets.length} host(s) over SSH:\n  ${failures.join("\n  ")}`,
      {
        hint: "check the hosts are up (sky status) and port 22 is open to you",
      },
    );
  }
  return sessions;
}

async function identitiesFromMetadata(ctx: AppContext, sessions: Map<string, HostSession>): Promise<Map<string, HostIdentity>> {
  const identities = new Map<string, HostIdentity>();
  const errors: string[] = [];
  await Promise.all(
    [...sessions].map(async ([alias, session]) => {
      const r = await session.exec(metadataCommand(), { timeoutMs: 20_000, signal: ctx.signal });
      try {
        if (r.code !== 0) throw new Error(r.stderr.trim().split("\n").at(-1) ?? `exit ${r.code}`);
        const v = metadataAnswer.parse(JSON.parse(r.stdout.trim()));
        if (v.workerId === null) throw new Error(`no worker number (read: ${v.tried.join(", ")})`);
        if (!isIpv4(v.internalIp ?? "")) throw new Error(`no internal IPv4 (got ${JSON.stringify(v.internalIp)})`);
        identities.set(alias, {
          workerId: v.workerId,
          internalIp: v.internalIp ?? "",
          sliceKey: sliceOfInstance(v.instanceName) ?? "slice-0",
        });
      } catch (err) {
        errors.push(`${alias}: metadata server: ${(err as Error).message}`);
      }
    }),
  );
  if (errors.length > 0) {
    throw new OperationError("hosts_mismatch", `cannot read the TPU worker numbers:\n  ${errors.join("\n  ")}`, {
      hint: "the hosts must reach their GCE metadata server (metadata.google.internal)",
    });
  }
  return identities;
}

/**
 * The hosts of one replica's cluster, ranked by TPU worker number, with an open SSH session to each whose
 * host key was checked. `recorded`: the hosts the state already knows for this replica, whose pinned keys
 * count where the Cloud TPU API has none.
 */
export async function discoverCluster(
  ctx: AppContext,
  config: Config,
  cluster: string,
  zone: string | undefined,
  recorded: readonly HostRecord[] = [],
): Promise<Discovered> {
  const name = cluster;
  const record = await skyRecord(ctx, name);
  if (!record) {
    throw new OperationError("hosts_mismatch", `SkyPilot has no cluster named ${name}`, { hint: "run tpu-deploy up to launch it" });
  }
  if (record.status !== "UP") {
    throw new OperationError("hosts_mismatch", `cluster ${name} is ${record.status}, not UP`, {
      hint: `see \`sky status -v ${name}\`; a spot cluster may have been preempted (tpu-deploy relaunch ${config.name})`,
    });
  }
  const nameOnCloud = record.cluster_name_on_cloud ?? "";
  const targets = await skyHosts(ctx.home, name, ctx.env);
  // One slice per cluster: sglang-jax serves one model within one slice.
  const expected = { slices: 1, vmsPerSlice: config.topology.slice.vmsPerSlice };

  let identities: Map<string, HostIdentity> | undefined;
  let source: Discovered["source"] = "metadata";
  let tpuNodes: TpuNode[] = [];
  // Why the Cloud TPU API cannot vouch for the hosts' keys, unless it can.
  let noApi =
    config.tpu.generation === "v7" ? "the Cloud TPU API does not serve TPU7x hosts" : "no project and zone to ask the Cloud TPU API";
  const project = config.tpu.project;
  if (config.tpu.generation === "v6e" && project && zone && nameOnCloud) {
    try {
      const api = await ctx.tpuApi();
      tpuNodes = nodesOfCluster(await api.listNodes(project, zone), nameOnCloud);
      const joined = joinWithTpuNodes(
        targets,
        tpuNodes.map((n) => ({ name: n.name, endpoints: n.endpoints })),
      );
      if (joined.ok) {
        identities = joined.identities;
        source = "tpu-api";
      } else if (targets.some((t) => t.proxyCommand !== undefined || !isIpv4(t.hostName))) {
        // Reached through a ProxyCommand (Docker images: HostName localhost): SSH addresses are not the
        // endpoints' addresses, so each host is asked instead.
        ctx.report.debug(`hosts behind a ProxyCommand: ${joined.errors.join("; ")}`);
        noApi = "reached through a ProxyCommand, the hosts cannot be matched to TPU workers before connecting";
      } else {
        throw new OperationError("hosts_mismatch", joined.errors.join("; "));
      }
    } catch (err) {
      if (!(err instanceof CloudApiError)) throw err;
      ctx.report.warn(`Cloud TPU API unavailable (${err.message}); reading worker numbers from each host's metadata server`);
      noApi = `Cloud TPU API unavailable: ${err.message}`;
    }
  }

  // Pins made since the caller read its copy (a probe earlier in this run) count as well.
  const pins = new Map(withPinsOnDisk(ctx, config.name, recorded).map((h) => [hostIdentity(h), h]));
  const recordedOf = (t: SkyHost): HostRecord | undefined =>
    pins.get(hostIdentity({ sshAlias: t.alias, externalIp: t.hostName, port: t.port }));
  const waitMs = config.launch.hostKeyWaitMs;
  let apiKeys = new Map<string, ApiKeys>();
  if (identities) {
    const workers = new Map([...identities].map(([alias, id]) => [alias, { node: id.sliceKey, workerId: id.workerId }]));
    // Hosts pinned earlier need not wait for keys that may never come; new hosts do.
    const waitFor = new Set(targets.filter((t) => !recordedOf(t)?.hostKeys?.length).map((t) => t.alias));
    apiKeys = await hostKeysFromTpuApi(ctx, workers, { waitMs, waitFor });
  }
  const policies = new Map(targets.map((t): [string, HostKeyPolicy] => [t.alias, discoveredPolicy(apiKeys.get(t.alias), recordedOf(t))]));
  const whyFirstUse = (alias: string): string => {
    const a = apiKeys.get(alias);
    if (a?.kind === "error") return a.why;
    if (a?.kind === "missing") return `the Cloud TPU API showed none within ${formatDuration(waitMs)} (launch.hostKeyWait)`;
    return noApi;
  };

  const sessions = await connectSessions(
    ctx,
    config.name,
    targets.map((t) => ({ ...t, hostKeys: policies.get(t.alias) ?? { kind: "first-use" } })),
  );
  try {
    // Without the Cloud TPU API (TPU7x, no project, or hosts behind a ProxyCommand whose HostName is not
    // their address): each host says who it is, and its instance name which slice it is in.
    identities ??= await identitiesFromMetadata(ctx, sessions);
    const ranked = assignRanks(targets, identities, expected);
    if (!ranked.ok) {
      throw new OperationError("hosts_mismatch", `the hosts found do not match the plan:\n  ${ranked.errors.join("\n  ")}`, {
        hint: `inspect with \`sky status -v ${name}\`; if the cluster is damaged, \`tpu-deploy down ${config.name}\` and up again`,
      });
    }
    const firstUse: FirstUse[] = [];
    const hosts = ranked.hosts.map((h): DiscoveredHost => {
      const policy = policies.get(h.alias) ?? { kind: "first-use" };
      const offered = sessions.get(h.alias)?.hostKey;
      if (policy.kind === "first-use" && offered) firstUse.push({ alias: h.alias, key: offered, why: whyFirstUse(h.alias) });
      return { ...h, ...pinnedAfter(policy, offered) };
    });
    if (firstUse.length > 0) ctx.report.warn(firstUseNotice(firstUse));
    return { record, nameOnCloud, hosts, sessions, source, tpuNodes, firstUse };
  } catch (err) {
    await closeSessions([...sessions.values()]);
    throw err;
  }
}
