// `sky launch`: client-side task parsing and checks, the optimizer and prompt, then a `sky.launch`
// request executed by a detached worker whose log is streamed; then the job's log, as the real CLI.
import { stringify } from "yaml";
import { readState, type SimCluster } from "../state.js";
import { commandSpec, type Parsed } from "./click.js";
import { refreshCluster } from "./cluster.js";
import { requireRoot, syncUserHash, type Ctx } from "./context.js";
import { exc } from "./errors.js";
import { confirm, outln } from "./io.js";
import { tailJobLog } from "./jobs.js";
import { CLUSTER_NAME_VALID_REGEX, generateClusterName, isValidClusterName, localUsername } from "./names.js";
import { consideredTable, optimize, type Candidate } from "./optimizer.js";
import { pyStr } from "./pyfmt.js";
import { queryClusters, setSshConfig } from "./records.js";
import { createRequest, printAsyncSubmitted, startWorker, streamRequest } from "./requests.js";
import { readClusterMeta } from "./server-db.js";
import { buildTask, redactedCommand } from "./task-options.js";
import { effectiveConfig, getNested, resourcesRepr, type Task } from "./task.js";
import type { LaunchSpec } from "./worker.js";

export function checkClusterName(name: string): void {
  if (!isValidClusterName(name)) {
    throw exc.invalidClusterName(
      `Cluster name "${name}" is invalid; ensure it is fully matched by regex (e.g., only contains letters, numbers and dash): ${CLUSTER_NAME_VALID_REGEX}`,
    );
  }
}

// skypilot-org/skypilot sky/backends/cloud_vm_ray_backend.py CloudVmRayBackend.check_resources_fit_cluster: a request fits when
// one of its resources is no more demanding than the cluster's, on no more nodes; otherwise the first
// resource asking for another region, then another zone, names it; else the generic mismatch.
export function checkFit(task: Task, c: SimCluster, name: string, existingRepr: string): void {
  const fits =
    task.numNodes <= c.numNodes &&
    task.resources.some(
      (r) =>
        (r.accelerator === null || r.accelerator === c.accelerator) &&
        (r.instanceType === null || (r.instanceType === "TPU-VM" ? c.accelerator !== null : r.instanceType === c.instanceType)) &&
        (!r.useSpotSpecified || r.useSpot === c.spot) &&
        (r.cloud === null || r.cloud === "gcp") &&
        (r.region === null || r.region === c.region) &&
        (r.zone === null || r.zone === c.zone),
    );
  if (fits) return;
  for (const r of task.resources) {
    if (r.region !== null && r.region !== c.region) {
      throw exc.resourcesMismatch(
        `Task requested resources ${resourcesRepr(r)} in region ${pyStr(r.region)}, but the existing cluster is in region ${pyStr(c.region)}.`,
      );
    }
    if (r.zone !== null && r.zone !== c.zone) {
      // f'{example_resource.zone!r},' 'but the existing cluster ' — no space after the comma, as SkyPilot prints it.
      throw exc.resourcesMismatch(
        `Task requested resources ${resourcesRepr(r)} in zone ${pyStr(r.zone)},but the existing cluster is in zone ${pyStr(c.zone)}.`,
      );
    }
  }
  const requested = task.resources.map((r) => `${task.numNodes}x ${resourcesRepr(r)}`).join(", ");
  throw exc.resourcesMismatch(
    "Requested resources do not match the existing cluster.\n" +
      `  Requested:\t{${requested}}\n` +
      `  Existing:\t${c.numNodes}x ${existingRepr}\n` +
      `To fix: specify a new cluster name, or down the existing cluster first: sky down ${name}`,
  );
}

// gcp.ssh_proxy_command: a string, or a map from region to string (skypilot-org/skypilot sky/utils/schemas.py).
function proxyCommandOf(config: Record<string, unknown>): string | Record<string, string> | null {
  const v = getNested(config, ["gcp", "ssh_proxy_command"]);
  if (typeof v === "string") return v;
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
  }
  return null;
}

// handle.launched_resources: where (and how) the existing cluster was launched.
function previousPlacement(candidates: Candidate[], c: SimCluster): Candidate {
  const base = candidates.find((x) => x.zone === c.zone) ?? candidates[0];
  if (!base) throw exc.resourcesUnavailable("No launchable resource found.");
  return { ...base, zone: c.zone, region: c.region, useSpot: c.spot };
}

export function hintMessages(jobId: number | null, cluster: string): string {
  let s = "\n📋 Useful Commands";
  if (jobId !== null) {
    s +=
      `\nJob ID: ${jobId}` +
      `\n├── To cancel the job:\t\tsky cancel ${cluster} ${jobId}` +
      `\n├── To stream job logs:\t\tsky logs ${cluster} ${jobId}` +
      `\n└── To view job queue:\t\tsky queue ${cluster}`;
  }
  s +=
    `\nCluster name: ${cluster}` +
    `\n├── To log into the head VM:\tssh ${cluster}` +
    `\n├── To submit a job:\t\tsky exec ${cluster} yaml_file` +
    `\n├── To stop the cluster:\tsky stop ${cluster}` +
    `\n└── To teardown the cluster:\tsky down ${cluster}`;
  return s;
}

function creationYaml(task: Task): string {
  const r = task.resources[0];
  const doc: Record<string, unknown> = {};
  if (task.name !== null) doc.name = task.name;
  if (r) {
    const res: Record<string, unknown> = {};
    if (r.cloud !== null) res.infra = [r.cloud, r.region, r.zone].filter((x) => x !== null).join("/");
    if (r.accelerator !== null) res.accelerators = { [r.accelerator]: r.acceleratorCount };
    if (r.acceleratorArgs !== null) res.accelerator_args = r.acceleratorArgs;
    if (r.instanceType !== null && r.instanceType !== "TPU-VM") res.instance_type = r.instanceType;
    if (r.useSpot) res.use_spot = true;
    if (r.ports.length > 0) res.ports = r.ports;
    if (Object.keys(r.labels).length > 0) res.labels = r.labels;
    doc.resources = res;
  }
  doc.num_nodes = task.numNodes;
  if (Object.keys(task.envs).length > 0) doc.envs = task.envs;
  if (Object.keys(task.secrets).length > 0) doc.secrets = Object.fromEntries(Object.keys(task.secrets).map((k) => [k, "<redacted>"]));
  if (task.setup !== null) doc.setup = task.setup;
  if (task.run !== null) doc.run = task.run;
  return stringify(doc);
}

export async function cmdLaunch(ctx: Ctx, p: Parsed): Promise<number> {
  requireRoot(ctx);
  const spec = commandSpec("launch");
  if (!spec) throw new Error("no launch spec");
  const built = await buildTask(spec, p, p.list("entrypoint"), "sky launch");
  const task = built.task;
  const userHash = await syncUserHash(ctx);
  const cluster = p.str("cluster") ?? generateClusterName();
  checkClusterName(cluster);
  const config = effectiveConfig(ctx.home, ctx.env, task, built.cliConfig);
  // cloud_vm_ray_backend.py _check_existing_cluster (skypilot-org/skypilot): an INIT cluster is refreshed by force (a preempted spot cluster by AUTO), and what
  // survives must fit the request (check_resources_fit_cluster), else ResourcesMismatchError.
  const before = (await readState(ctx.root)).clusters[cluster];
  const beforeMeta = readClusterMeta(ctx.root, cluster);
  await refreshCluster(ctx.root, cluster, before?.status === "INIT");
  const existing = (await readState(ctx.root)).clusters[cluster];
  const reuse = existing !== undefined && existing.status === "UP";
  const yes = p.bool("yes");
  const dryrun = p.bool("dryrun");
  // With a prompt the optimizer's table comes first (an `optimize` request); with -y the client says
  // where it runs and the table arrives in the launch request's stream.
  const prompt = !yes && !dryrun && existing === undefined;
  if (!prompt) outln(`Running on cluster: ${cluster}`);
  let candidates: LaunchSpec["candidates"] = [];
  let relaunch: LaunchSpec["relaunch"] = null;
  let notice: string | null = null;
  if (reuse) {
    checkFit(task, existing, cluster, readClusterMeta(ctx.root, cluster)?.resourcesRepr ?? "GCP()");
  } else if (existing !== undefined) {
    // An INIT (or STOPPED) cluster is relaunched with its own launched resources, in its previous zone only
    // (RetryingVmProvisioner._yield_zones).
    const meta = readClusterMeta(ctx.root, cluster);
    checkFit(task, existing, cluster, meta?.resourcesRepr ?? "GCP()");
    candidates = optimize(task, config);
    relaunch = { prevStatus: existing.status, candidate: previousPlacement(candidates, existing), everUp: meta?.everUp === true };
  } else {
    candidates = optimize(task, config);
    if (before !== undefined) {
      // The INIT cluster was gone on the cloud: its old placement must still fit, and is tried first.
      checkFit(task, before, cluster, beforeMeta?.resourcesRepr ?? "GCP()");
      const prev = previousPlacement(candidates, before);
      candidates = [prev, ...candidates.filter((c) => c.zone !== prev.zone)];
      notice =
        `The cluster ${pyStr(cluster)} (status: ${before.status}) was not found on the cloud: it may be autodowned, ` +
        "manually terminated, or its launch never succeeded. Provisioning a new cluster by using the same resources as its original launch.";
    }
    const first = candidates[0];
    if (first) outln(consideredTable(task.numNodes, first));
  }
  if (prompt) await confirm(`Launching a new cluster '${cluster}'. Proceed?`, true);
  if (dryrun) {
    outln("Dryrun finished.");
    return 0;
  }

  const idle = p.int("idle_minutes_to_autostop");
  const down = p.bool("down");
  const launchSpec: LaunchSpec = {
    root: ctx.root,
    requestId: "",
    clusterName: cluster,
    candidates,
    numNodes: task.numNodes,
    taskRepr: task.resources[0] ? resourcesRepr(task.resources[0]) : "GCP()",
    retryUntilUp: p.bool("retry_until_up"),
    autostopMinutes: idle ?? (down ? 0 : -1),
    toDown: down,
    waitFor: p.str("wait_for") ?? "jobs_and_ssh",
    noSetup: p.bool("no_setup"),
    task: { name: task.name, setup: task.setup, run: task.run, envs: task.envs, secrets: task.secrets },
    userName: localUsername(),
    userHash,
    lastCreationYaml: built.isYaml ? creationYaml(task) : null,
    lastCreationCommand: redactedCommand("sky launch", ctx.argv.slice(1)),
    relaunch,
    notice,
    sshProxyCommand: proxyCommandOf(config),
    env: Object.fromEntries(Object.entries(ctx.env).filter((e): e is [string, string] => typeof e[1] === "string")),
  };
  const req = await createRequest(ctx.root, "sky.launch", cluster, userHash);
  launchSpec.requestId = req.requestId;
  await startWorker(ctx.root, req.requestId, launchSpec, ctx.env);
  if (p.bool("async")) {
    printAsyncSubmitted(ctx.env, "sky.launch", req.requestId);
    return 0;
  }
  const done = await streamRequest(ctx.root, ctx.env, req.requestId);
  const jobId = done.result?.jobId ?? null;
  const q = await queryClusters(ctx.root, [cluster], "none");
  setSshConfig(ctx.home, q.records, [cluster], true);
  let rc = 0;
  if (!p.bool("detach_run") && jobId !== null) {
    const meta = readClusterMeta(ctx.root, cluster);
    const c = (await readState(ctx.root)).clusters[cluster];
    if (meta && c) {
      rc = await tailJobLog({
        root: ctx.root,
        cluster,
        clusterHash: meta.clusterHash,
        jobId,
        follow: true,
        tail: 0,
        numNodes: task.numNodes,
        banner: true,
      });
    }
  }
  outln(hintMessages(jobId, cluster));
  return rc;
}
