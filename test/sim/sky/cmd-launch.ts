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
import { consideredTable, optimize } from "./optimizer.js";
import { queryClusters, setSshConfig } from "./records.js";
import { createRequest, printAsyncSubmitted, startWorker, streamRequest } from "./requests.js";
import { readClusterMeta } from "./server-db.js";
import { buildTask, redactedCommand } from "./task-options.js";
import { effectiveConfig, resourcesRepr, type Task } from "./task.js";
import type { LaunchSpec } from "./worker.js";

export function checkClusterName(name: string): void {
  if (!isValidClusterName(name)) {
    throw exc.invalidClusterName(
      `Cluster name "${name}" is invalid; ensure it is fully matched by regex (e.g., only contains letters, numbers and dash): ${CLUSTER_NAME_VALID_REGEX}`,
    );
  }
}

// backend_utils.check_resources_fit_cluster for a reused cluster.
export function checkFit(task: Task, c: SimCluster, name: string, existingRepr: string): void {
  if (task.numNodes > c.numNodes) {
    throw exc.resourcesMismatch(
      `Requested ${task.numNodes} nodes, but the cluster ${JSON.stringify(name).replace(/"/g, "'")} has ${c.numNodes} node${c.numNodes === 1 ? "" : "s"}.\n` +
        `To fix: specify a new cluster name, or down the existing cluster first: sky down ${name}`,
    );
  }
  const fits = task.resources.some(
    (r) =>
      (r.accelerator === null || r.accelerator === c.accelerator) &&
      (r.instanceType === null || (r.instanceType === "TPU-VM" ? c.accelerator !== null : r.instanceType === c.instanceType)) &&
      (!r.useSpotSpecified || r.useSpot === c.spot) &&
      (r.cloud === null || r.cloud === "gcp") &&
      (r.region === null || r.region === c.region) &&
      (r.zone === null || r.zone === c.zone),
  );
  if (!fits) {
    const requested = task.resources.map((r) => `${task.numNodes}x ${resourcesRepr(r)}`).join(", ");
    throw exc.resourcesMismatch(
      "Requested resources do not match the existing cluster.\n" +
        `  Requested:\t{${requested}}\n` +
        `  Existing:\t${c.numNodes}x ${existingRepr}\n` +
        `To fix: specify a new cluster name, or down the existing cluster first: sky down ${name}`,
    );
  }
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
  // A preempted spot cluster is found gone here and launched anew (_check_existing_cluster refreshes).
  await refreshCluster(ctx.root, cluster, false);
  const existing = (await readState(ctx.root)).clusters[cluster];
  const reuse = existing !== undefined && existing.status === "UP";
  const yes = p.bool("yes");
  const dryrun = p.bool("dryrun");
  // With a prompt the optimizer's table comes first (an `optimize` request); with -y the client says
  // where it runs and the table arrives in the launch request's stream.
  const prompt = !yes && !dryrun && existing === undefined;
  if (!prompt) outln(`Running on cluster: ${cluster}`);
  let candidates: LaunchSpec["candidates"] = [];
  if (reuse) {
    checkFit(task, existing, cluster, readClusterMeta(ctx.root, cluster)?.resourcesRepr ?? "GCP()");
  } else {
    candidates = optimize(task, config);
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
  const q = await queryClusters(ctx.root, [cluster], false);
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
