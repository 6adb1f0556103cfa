// Finding every host of a cluster and its rank: SkyPilot's status and SSH config, then each host's TPU
// worker number and internal address from the Cloud TPU API (v6e) or the host's metadata server (v7).
import type { SkyClusterRecord } from "../adapters/sky.js";
import { readSkySshConfig, skySshConfigPath } from "../adapters/sky-ssh.js";
import { closeSessions, connectAll } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import { nodesOfCluster, type TpuNode } from "../adapters/tpu-api.js";
import type { Config } from "../core/config.js";
import { assignRanks, type HostIdentity, isIpv4, joinWithTpuNodes, type RankedHost, type SkyHost } from "../core/ranks.js";
import type { SshTarget } from "../core/ssh-target.js";
import { metadataCommand } from "../core/remote.js";
import { clusterHosts, expandTilde, parseSshConfig } from "../core/ssh-config.js";
import { CloudApiError, OperationError } from "../errors.js";
import type { AppContext } from "./context.js";

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

export function readSshTargets(ctx: AppContext, cluster: string): SkyHost[] {
  const path = skySshConfigPath(ctx.home, cluster);
  const text = readSkySshConfig(ctx.home, cluster);
  if (text === undefined) {
    throw new OperationError("hosts_mismatch", `SkyPilot's SSH config for ${cluster} is missing (${path})`, {
      hint: `run \`sky status ${cluster}\` (it rewrites the file), then try again`,
    });
  }
  const parsed = parseSshConfig(text, cluster);
  if (parsed.kind !== "ok") {
    throw new OperationError(
      "hosts_mismatch",
      `cannot read ${path}: ${parsed.problems.map((p) => `line ${p.line}: ${p.message}`).join("; ")}`,
    );
  }
  const hosts = clusterHosts(parsed.entries, cluster);
  if (hosts.kind !== "ok") throw new OperationError("hosts_mismatch", `${path}: ${hosts.message}`);
  return hosts.hosts.map((h) => ({
    alias: h.alias,
    index: h.index,
    hostName: h.hostName,
    user: h.user,
    port: h.port,
    identityFile: expandTilde(h.identityFile, ctx.home),
  }));
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
        const v = JSON.parse(r.stdout.trim()) as { workerId: number; internalIp: string };
        if (!Number.isInteger(v.workerId) || !isIpv4(v.internalIp)) throw new Error(`unexpected answer ${r.stdout.trim()}`);
        identities.set(alias, { workerId: v.workerId, internalIp: v.internalIp, sliceKey: "slice-0" });
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

export async function discoverCluster(ctx: AppContext, config: Config, zone: string | undefined): Promise<Discovered> {
  const name = config.name;
  const record = await skyRecord(ctx, name);
  if (!record) {
    throw new OperationError("hosts_mismatch", `SkyPilot has no cluster named ${name}`, { hint: "run tpu-deploy up to launch it" });
  }
  if (record.status !== "UP") {
    throw new OperationError("hosts_mismatch", `cluster ${name} is ${record.status}, not UP`, {
      hint: `see \`sky status -v ${name}\`; a spot cluster may have been preempted (tpu-deploy relaunch ${name})`,
    });
  }
  const nameOnCloud = record.cluster_name_on_cloud ?? "";
  const targets = readSshTargets(ctx, name);
  const expected = { slices: config.topology.slices, vmsPerSlice: config.topology.slice.vmsPerSlice };

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
      if (!joined.ok) throw new OperationError("hosts_mismatch", joined.errors.join("; "));
      identities = joined.identities;
      source = "tpu-api";
    } catch (err) {
      if (!(err instanceof CloudApiError)) throw err;
      ctx.report.warn(`Cloud TPU API unavailable (${err.message}); reading worker numbers from each host's metadata server`);
    }
  }
  const sessions = await connectSessions(ctx, targets);
  try {
    if (!identities) {
      if (expected.slices > 1) {
        throw new OperationError(
          "hosts_mismatch",
          `${expected.slices} separate slices need the Cloud TPU API to tell which host belongs to which slice`,
          {
            hint: "set tpu.project (or GOOGLE_CLOUD_PROJECT) and give your credentials tpu.nodes.list",
          },
        );
      }
      identities = await identitiesFromMetadata(ctx, sessions);
    }
    const ranked = assignRanks(targets, identities, expected);
    if (!ranked.ok) {
      throw new OperationError("hosts_mismatch", `the hosts found do not match the plan:\n  ${ranked.errors.join("\n  ")}`, {
        hint: `inspect with \`sky status -v ${name}\`; if the cluster is damaged, \`tpu-deploy down ${name}\` and up again`,
      });
    }
    return { record, nameOnCloud, hosts: ranked.hosts, sessions, source, tpuNodes };
  } catch (err) {
    await closeSessions([...sessions.values()]);
    throw err;
  }
}
