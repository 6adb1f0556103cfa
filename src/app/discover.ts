// Finding every host of a cluster and its rank: SkyPilot's status and SSH config, then each host's TPU
// worker number and internal address from the Cloud TPU API (v6e) or the host's metadata server (v7).
import { z } from "zod";
import type { SkyClusterRecord } from "../adapters/sky.js";
import { skyHosts } from "../adapters/sky-ssh.js";
import { closeSessions, connectAll } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import { nodesOfCluster, type TpuNode } from "../adapters/tpu-api.js";
import type { Config } from "../core/config.js";
import { assignRanks, type HostIdentity, isIpv4, joinWithTpuNodes, type RankedHost } from "../core/ranks.js";
import type { SshTarget } from "../core/ssh-target.js";
import { metadataCommand, sliceOfInstance } from "../core/remote.js";
import { CloudApiError, OperationError } from "../errors.js";
import type { AppContext } from "./context.js";

// What the metadata probe prints (core/remote.ts METADATA_PY).
const metadataAnswer = z.object({
  workerId: z.number().int().nonnegative().nullable(),
  source: z.string().nullable(),
  internalIp: z.string().nullable(),
  instanceName: z.string(),
  tried: z.array(z.string()),
});

export interface Discovered {
  record: SkyClusterRecord;
  nameOnCloud: string;
  hosts: RankedHost[];
  sessions: Map<string, HostSession>;
  source: "tpu-api" | "metadata";
  tpuNodes: TpuNode[];
}

export async function skyRecord(ctx: AppContext, name: string, opts: { refresh?: boolean } = {}): Promise<SkyClusterRecord | undefined> {
  const sky = await ctx.sky();
  const records = await sky.status([name], { verbose: true, refresh: opts.refresh ?? false, signal: ctx.signal });
  return records.find((r) => r.name === name);
}

export async function connectSessions(ctx: AppContext, targets: readonly SshTarget[]): Promise<Map<string, HostSession>> {
  const results = await connectAll(targets, { concurrency: 16, timeoutMs: 30_000, signal: ctx.signal });
  const sessions = new Map<string, HostSession>();
  const failures: string[] = [];
  for (const r of results) {
    if (r.kind === "ok") sessions.set(r.host, r.session);
    else failures.push(`${r.host}: ${r.error.message} (${r.error.hint})`);
  }
  if (failures.length > 0) {
    await closeSessions([...sessions.values()]);
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

/** The hosts of one replica's cluster, ranked by TPU worker number, with an open SSH session to each. */
export async function discoverCluster(ctx: AppContext, config: Config, cluster: string, zone: string | undefined): Promise<Discovered> {
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
      } else {
        throw new OperationError("hosts_mismatch", joined.errors.join("; "));
      }
    } catch (err) {
      if (!(err instanceof CloudApiError)) throw err;
      ctx.report.warn(`Cloud TPU API unavailable (${err.message}); reading worker numbers from each host's metadata server`);
    }
  }
  const sessions = await connectSessions(ctx, targets);
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
    return { record, nameOnCloud, hosts: ranked.hosts, sessions, source, tpuNodes };
  } catch (err) {
    await closeSessions([...sessions.values()]);
    throw err;
  }
}
