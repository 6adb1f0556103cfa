// `sky exec`, `sky logs`, `sky queue`: commands that need an existing, UP cluster.
import { existsSync, readFileSync } from "node:fs";
import { readState, type SimCluster } from "../state.js";
import { commandSpec, usageError, type Parsed } from "./click.js";
import { refreshCluster } from "./cluster.js";
import { requireRoot, syncUserHash, type Ctx } from "./context.js";
import { exc, SkyException } from "./errors.js";
import { out, outln } from "./io.js";
import { jobExitCode, submitJob, tailJobLog, TERMINAL } from "./jobs.js";
import { checkFit } from "./cmd-launch.js";
import { localUsername } from "./names.js";
import { pyJsonDumps, renderTable, timeAgo } from "./pyfmt.js";
import { queryClusters, setSshConfig } from "./records.js";
import { printAsyncSubmitted } from "./requests.js";
import { listJobMetas, newRequestId, readClusterMeta, type ClusterMeta } from "./server-db.js";
import { buildTask } from "./task-options.js";

// backend_utils.check_cluster_available.
export async function checkClusterAvailable(
  ctx: Ctx,
  name: string,
  operation: string,
): Promise<{ cluster: SimCluster; meta: ClusterMeta }> {
  const before = (await readState(ctx.root)).clusters[name];
  const metaBefore = readClusterMeta(ctx.root, name);
  const r = await refreshCluster(ctx.root, name, false);
  if (r.cluster === null) {
    if (before === undefined) throw exc.clusterDoesNotExist(`Cluster '${name}' does not exist.`);
    const actions: string[] = [];
    if (before.spot) actions.push("preempted");
    if ((metaBefore?.autostopMinutes ?? -1) > 0 && metaBefore?.toDown) actions.push("autodowned");
    actions.push("manually terminated in console");
    if (actions.length > 1) actions[actions.length - 1] = `or ${actions[actions.length - 1]}`;
    let message = ` It was likely ${actions.join(", ")}.`;
    if (actions.length > 1) message = message.replace("likely", "likely either");
    throw exc.clusterDoesNotExist(`Cluster '${name}' not found on the cloud provider.${message}`);
  }
  const meta = readClusterMeta(ctx.root, name);
  if (r.cluster.status !== "UP" || meta === null) {
    throw exc.clusterNotUp(
      `${operation.charAt(0).toUpperCase()}${operation.slice(1)}: skipped for cluster '${name}' (status: ${r.cluster.status}). It is only allowed for UP clusters.`,
    );
  }
  return { cluster: r.cluster, meta };
}

// Job submission and log tailing run over SSH on the head node; a dead head (not yet noticed by a
// refresh) fails there with ssh's 255.
async function requireHeadReachable(ctx: Ctx, c: SimCluster): Promise<void> {
  const head = (await readState(ctx.root)).hosts[c.headHostId];
  if (!head?.alive) {
    throw exc.command(
      `Command failed with return code 255.\nFailed to run a command on the head node of cluster '${c.name}' (${head?.externalIp ?? "?"}): ssh: connect to host ${head?.externalIp ?? "?"} port 22: No route to host`,
    );
  }
}

function numHosts(c: SimCluster): number {
  return c.slices.reduce((n, sl) => n + sl.hostIds.length, 0);
}

export async function cmdExec(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("exec");
  if (!spec) throw new Error("no exec spec");
  let cluster = p.str("cluster");
  const clusterOption = p.str("cluster_option");
  let entrypoint = p.list("entrypoint");
  if (clusterOption === null && cluster === null) throw usageError(spec, "Missing argument '[CLUSTER]' and '[ENTRYPOINT]...'");
  if (clusterOption !== null) {
    if (cluster !== null) entrypoint = [cluster, ...entrypoint];
    cluster = clusterOption;
  }
  if (entrypoint.length === 0) throw usageError(spec, "Missing argument '[ENTRYPOINT]...'");
  if (cluster === null) return 2;
  const built = await buildTask(spec, p, entrypoint, "sky exec");
  requireRoot(ctx);
  const userHash = await syncUserHash(ctx);
  outln(`Submitting job to cluster: ${cluster}`);
  const { cluster: c, meta } = await checkClusterAvailable(ctx, cluster, "executing task");
  checkFit(built.task, c, cluster, meta.resourcesRepr);
  await requireHeadReachable(ctx, c);
  const jobId = await submitJob({
    root: ctx.root,
    cluster,
    name: built.task.name,
    setup: null,
    run: built.task.run,
    envs: built.task.envs,
    secrets: built.task.secrets,
    user: localUsername(),
    userHash,
    resources: `${built.task.numNodes}x[${c.accelerator ?? "CPU"}:1]`,
    numNodes: built.task.numNodes,
    env: ctx.env,
  });
  if (p.bool("async")) {
    printAsyncSubmitted(ctx.env, "sky.exec", newRequestId());
    return 0;
  }
  outln(`⚙︎ Job submitted, ID: ${jobId}`);
  if (p.bool("detach_run")) return 0;
  return await tailJobLog({
    root: ctx.root,
    cluster,
    clusterHash: meta.clusterHash,
    jobId,
    follow: true,
    tail: 0,
    numNodes: built.task.numNodes,
    banner: true,
  });
}

export async function cmdLogs(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("logs");
  if (!spec) throw new Error("no logs spec");
  const cluster = p.str("cluster") ?? "";
  const jobIds = p.list("job_ids");
  const syncDown = p.bool("sync_down");
  if (jobIds.length > 1 && !syncDown) {
    throw usageError(
      spec,
      `Cannot stream logs of multiple jobs (IDs: ${jobIds.join(", ")}).\nPass -s/--sync-down to download the logs instead.`,
    );
  }
  for (const id of jobIds) if (!/^\d+$/.test(id)) throw usageError(spec, `Invalid job ID ${id}. Job ID must be integers.`);
  requireRoot(ctx);
  await syncUserHash(ctx);
  if (p.bool("provision")) {
    const meta = readClusterMeta(ctx.root, cluster);
    if (!meta?.provisionLog || !existsSync(meta.provisionLog)) throw exc.clusterDoesNotExist(`Cluster '${cluster}' does not exist.`);
    out(readFileSync(meta.provisionLog, "utf8"));
    return 0;
  }
  const { cluster: c, meta } = await checkClusterAvailable(ctx, cluster, "tailing logs");
  await requireHeadReachable(ctx, c);
  const jobId = jobIds.length > 0 ? Number(jobIds[0]) : (c.jobs[c.jobs.length - 1]?.id ?? null);
  const job = jobId === null ? undefined : c.jobs.find((j) => j.id === jobId);
  if (p.bool("status")) {
    if (jobId === null) {
      outln(`No job found on cluster '${cluster}'.`);
      return 102;
    }
    if (!job) {
      outln(`Job ${jobId}: None`);
      outln(`Job ${jobId} not found`);
      return 102;
    }
    outln(`Job ${jobId}: ${job.status}`);
    return jobExitCode(job.status);
  }
  if (syncDown) {
    outln(`Job logs synced to ~/sky_logs (simulated: not copied).`);
    return 0;
  }
  if (jobId === null || !job) {
    outln(jobId === null ? `No job found on cluster '${cluster}'.` : `Job ${jobId} not found.`);
    return 102;
  }
  const follow = p.tri("follow") ?? true;
  return await tailJobLog({
    root: ctx.root,
    cluster,
    clusterHash: meta.clusterHash,
    jobId,
    follow,
    tail: p.int("tail") ?? 0,
    numNodes: numHosts(c),
    banner: false,
  });
}

export async function cmdQueue(ctx: Ctx, p: Parsed): Promise<number> {
  requireRoot(ctx);
  await syncUserHash(ctx);
  const json = p.str("output") === "json";
  let clusters = p.list("clusters");
  if (!json) outln("Fetching and parsing job queue...");
  if (clusters.length === 0) {
    const q = await queryClusters(ctx.root, null, "auto");
    setSshConfig(ctx.home, q.records, null, p.bool("all_users"));
    clusters = q.records.map((r) => r.name);
  }
  outln(`Fetching job queue for: ${clusters.join(", ")}`);
  const skipFinished = p.bool("skip_finished");
  const tables: Record<string, Record<string, unknown>[]> = {};
  for (const name of clusters) {
    try {
      const { cluster: c, meta } = await checkClusterAvailable(ctx, name, "getting the job queue");
      const head = (await readState(ctx.root)).hosts[c.headHostId];
      if (!head?.alive) {
        throw exc.command(`Command to get the job queue on cluster ${name} failed with return code 255 (SSH to the head node failed).`);
      }
      const metas = new Map(listJobMetas(ctx.root, meta.clusterHash).map((m) => [m.id, m]));
      tables[name] = [...c.jobs]
        .sort((a, b) => b.id - a.id)
        .filter((j) => !skipFinished || !TERMINAL.includes(j.status))
        .map((j) => {
          const m = metas.get(j.id);
          return {
            job_id: j.id,
            job_name: m?.name ?? null,
            username: m?.username ?? localUsername(),
            user_hash: m?.userHash ?? "",
            submitted_at: m?.submittedAt ?? j.submittedAt / 1000,
            start_at: m?.startAt ?? null,
            end_at: m?.endAt ?? null,
            resources: m?.resources ?? "-",
            status: j.status,
            log_path: m?.remoteLogPath ?? "-",
            metadata: {},
          };
        });
    } catch (e) {
      if (!(e instanceof SkyException)) throw e;
      const cls = e.pyClass.replace(/^sky\.exceptions\./, "");
      outln(`Failed to get the job queue for cluster '${name}'.\n  ${cls}: ${e.message}`);
    }
  }
  if (json) {
    outln(pyJsonDumps(tables));
    return 0;
  }
  const userStr = p.bool("all_users") ? "all users" : "current user";
  for (const [name, jobs] of Object.entries(tables)) {
    const rows = jobs.map((j) => {
      const start = j.start_at as number | null;
      const end = j.end_at as number | null;
      const dur = start === null ? "-" : `${Math.round((end ?? Date.now() / 1000) - start)}s`;
      return [
        String(j.job_id),
        String(j.job_name ?? "-"),
        String(j.username),
        timeAgo(j.submitted_at as number),
        start === null ? "-" : timeAgo(start),
        dur,
        String(j.resources),
        String(j.status),
        String(j.log_path),
        "-",
      ];
    });
    outln(`\nJob queue of ${userStr} on cluster ${name}`);
    outln(
      rows.length > 0
        ? renderTable(["ID", "NAME", "USER", "SUBMITTED", "STARTED", "DURATION", "RESOURCES", "STATUS", "LOG", "GIT COMMIT"], rows)
        : "No jobs found.",
    );
  }
  return 0;
}
