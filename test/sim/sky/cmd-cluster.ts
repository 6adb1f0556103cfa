// `sky status`, `sky down`, `sky stop`: cluster records, the SSH config that follows them, teardown.
import { readFaults, readState } from "../state.js";
import { usageError, commandSpec, type Parsed } from "./click.js";
import { dropClusterRecord, launchInFlight, refreshCluster, teardownCluster } from "./cluster.js";
import { requireRoot, syncUserHash, type Ctx } from "./context.js";
import { Abort, exc, SkyException } from "./errors.js";
import { confirm, outln } from "./io.js";
import { globMatch, printStatusJson, printStatusTable, queryClusters, setSshConfig } from "./records.js";
import { printAsyncSubmitted } from "./requests.js";
import { newRequestId } from "./server-db.js";
import { removeCluster } from "./ssh-config.js";

const PROPERTY_ERR = (num: string, plural: string, verb: string, cause: string, prop: string, flag: string) =>
  `${num} cluster${plural} ${verb}. Please specify ${cause} cluster to show its ${prop}.\nUsage: \`sky status --${flag} <cluster>\``;

export async function cmdStatus(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("status");
  if (!spec) throw new Error("no status spec");
  const clusters = p.list("clusters");
  const ip = p.bool("ip");
  const endpoints = p.bool("endpoints");
  const endpoint = p.int("endpoint");
  const showEndpoints = endpoints || endpoint !== null;
  const refresh = p.bool("refresh");
  if (ip || showEndpoints) {
    if (refresh) {
      throw usageError(
        spec,
        "Using --ip or --endpoint(s) with --refresh is notsupported for now. To fix, refresh first, then query the IP or endpoint.",
      );
    }
    if (ip && showEndpoints) throw exc.value("Cannot specify both --ip and --endpoint(s) at the same time.");
    if (endpoint !== null && endpoints) throw exc.value("Cannot specify both --endpoint and --endpoints at the same time.");
    if (clusters.length !== 1) {
      throw exc.value(
        PROPERTY_ERR(
          clusters.length > 0 ? String(clusters.length) : "No",
          clusters.length > 1 ? "s" : "",
          "specified",
          clusters.length > 1 ? "a single" : "an existing",
          ip ? "IP address" : "endpoint(s)",
          ip ? "ip" : endpoint !== null ? "endpoint port" : "endpoints",
        ),
      );
    }
  }
  requireRoot(ctx);
  await syncUserHash(ctx);
  const queried = clusters.length > 0 ? clusters : null;
  const allUsers = p.bool("all_users");
  const verbose = p.bool("verbose");
  const q = await queryClusters(ctx.root, queried, refresh ? "force" : "none");
  for (const n of q.terminated) outln(`Cluster terminated on the cloud: ${n}`);
  setSshConfig(ctx.home, q.records, queried, queried !== null || allUsers);
  const json = p.str("output") === "json";
  if (json) {
    if (queried !== null) {
      const missing = queried.filter((c) => !q.records.some((r) => globMatch(c, r.name)));
      if (missing.length > 0) outln(`Cluster(s) not found: ${missing.join(", ")}.`);
    }
    printStatusJson(q.records, verbose, (await readFaults(ctx.root)).sky?.initKindFields === true);
    return 0;
  }
  if (ip || showEndpoints) {
    const recs = q.records;
    if (recs.length !== 1) {
      throw exc.value(
        PROPERTY_ERR(
          recs.length > 0 ? String(recs.length) : `'${clusters[0] ?? ""}'`,
          recs.length > 1 ? "s" : "",
          recs.length > 0 ? "found" : "not found",
          "a single",
          ip ? "IP address" : "endpoint(s)",
          ip ? "ip" : endpoint !== null ? "endpoint port" : "endpoints",
        ),
      );
    }
    const r = recs[0];
    if (!r) return 1;
    if (r.cluster.status !== "UP") throw exc.runtime(`Cluster '${r.name}' is not in UP status.`);
    const head = r.hosts[0]?.externalIp ?? "";
    if (ip) {
      outln(head);
      return 0;
    }
    const ports = r.meta?.ports ?? [];
    if (endpoint !== null) {
      if (!ports.includes(String(endpoint))) {
        throw new Abort();
      }
      outln(`${head}:${endpoint}`);
      return 0;
    }
    for (const port of ports) outln(`${port}: ${head}:${port}`);
    return 0;
  }
  outln("Enabled Infra: gcp");
  outln();
  outln("Clusters");
  printStatusTable(q.records, verbose, allUsers, queried);
  if (queried === null) {
    outln();
    outln("Managed jobs");
    outln("No in-progress managed jobs. (See: sky jobs -h)");
    outln();
    outln("Services");
    outln("No live services. (See: sky serve -h)");
  }
  return 0;
}

async function matchClusters(ctx: Ctx, names: string[], all: boolean): Promise<{ matched: string[]; missing: boolean }> {
  const q = await queryClusters(ctx.root, all ? null : names, "auto");
  const matched = q.records.map((r) => r.name);
  const missing = !all && names.some((n) => !matched.some((m) => globMatch(n, m)));
  return { matched, missing };
}

export async function cmdDown(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("down");
  if (!spec) throw new Error("no down spec");
  const names = p.list("clusters");
  const all = p.bool("all") || p.bool("all_users");
  if (names.length === 0 && !all) {
    throw usageError(spec, "`sky down` requires either a cluster name or glob (see `sky status`), or the -a/--all flag.");
  }
  requireRoot(ctx);
  await syncUserHash(ctx);
  const { matched, missing } = await matchClusters(ctx, names, all);
  if (matched.length === 0) {
    outln("Cluster(s) not found (tip: see `sky status`).");
    return 0;
  }
  if (missing) outln("Cluster(s) not found (tip: see `sky status`).");
  if (!p.bool("yes")) {
    await confirm(`Terminating ${matched.length} cluster${matched.length > 1 ? "s" : ""}: ${matched.join(", ")}. Proceed?`, true);
  }
  if (p.bool("async")) printAsyncSubmitted(ctx.env, "sky.down", newRequestId());
  const purge = p.bool("purge");
  let failed = false;
  for (const name of matched) {
    try {
      await waitForLaunchLock(ctx, name);
      // cloud_vm_ray_backend.py teardown_no_lock (skypilot-org/skypilot) refreshes the cluster first (a fully preempted one is gone after that).
      const r = await refreshCluster(ctx.root, name, true);
      if (r.cluster !== null) {
        const fault = await downFault(ctx, name);
        if (fault !== null) {
          if (!purge) throw fault;
          // --purge: the error becomes a warning and the record goes; nothing was deleted on the cloud.
          outln(
            `WARNING: Received non-zero exit code from terminating cluster nodes. Make sure resources are manually deleted.\nDetails: ${fault.message}`,
          );
          await dropClusterRecord(ctx.root, name);
        } else {
          await teardownCluster(ctx.root, name);
        }
      }
      removeCluster(ctx.home, name);
      outln(`Terminating cluster ${name}...done.`);
    } catch (e) {
      failed = true;
      // skypilot-org/skypilot sky/client/cli/command.py _down_or_stop_clusters: a CloudError (what the API server makes of a googleapiclient
      // HttpError) is printed bare; a RuntimeError as "...failed. " + "Reason: <Class>: <msg>.". Both on
      // stdout; the command still exits 0 and the cluster stays in the status table.
      if (e instanceof SkyException && e.pyClass === "CloudError") outln(e.message);
      else {
        outln(`Terminating cluster ${name}...failed. `);
        const reason =
          e instanceof SkyException ? `${e.pyClass}: ${e.message}` : `RuntimeError: ${e instanceof Error ? e.message : String(e)}`;
        outln(`Reason: ${reason}.`);
      }
    }
  }
  if (failed) {
    outln(
      "Cluster(s) failed. See details above. If you want to ignore the errors and remove the cluster(s) from the status table, use `sky down --purge`.",
    );
  }
  return 0;
}

// faults.json sky.downFail: the GCP teardown of these clusters (all when none are named) fails. "cloud" is a
// googleapiclient HttpError, which the API server wraps as CloudError(message=str(exc), cloud_provider=
// 'googleapiclient', error_type='HttpError'); "runtime" a RuntimeError out of the provisioner.
async function downFault(ctx: Ctx, name: string): Promise<SkyException | null> {
  const f = (await readFaults(ctx.root)).sky?.downFail;
  if (!f || (f.clusters !== undefined && !f.clusters.includes(name))) return null;
  const s = await readState(ctx.root);
  const c = s.clusters[name];
  const node = c?.slices[0]?.nodeName ?? `projects/${s.project}/zones/${c?.zone ?? "-"}/instanceGroupManagers/${c?.nameOnCloud ?? name}`;
  if (f.kind === "runtime")
    return new SkyException("RuntimeError", f.message ?? `Failed to terminate instances of cluster ${c?.nameOnCloud ?? name}.`);
  const denied = `Permission 'tpu.nodes.delete' denied on resource '//tpu.googleapis.com/${node}' (or it may not exist).`;
  const text =
    f.message ??
    `<HttpError 403 when requesting https://tpu.googleapis.com/v2/${node}?alt=json returned "${denied}". Details: "${denied}">`;
  return new SkyException("CloudError", `googleapiclient error (HttpError): ${text}`);
}

// The cluster lock of an in-flight launch: teardown waits for it, then gives up (cloud_vm_ray_backend).
const TEARDOWN_LOCK_TIMEOUT_MS = 20_000;

async function waitForLaunchLock(ctx: Ctx, name: string): Promise<void> {
  const end = Date.now() + TEARDOWN_LOCK_TIMEOUT_MS;
  while (launchInFlight(ctx.root, name)) {
    if (Date.now() > end) {
      throw exc.runtime(`Cluster '${name}' is locked by ${ctx.home}/.sky/locks/.${name}.lock. Check to see if it is still being launched`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// TPU pods cannot be stopped: SkyPilot skips them and exits 0 (core.stop).
export async function cmdStop(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("stop");
  if (!spec) throw new Error("no stop spec");
  const names = p.list("clusters");
  const all = p.bool("all") || p.bool("all_users");
  if (names.length === 0 && !all) {
    throw usageError(spec, "`sky stop` requires either a cluster name or glob (see `sky status`), or the -a/--all flag.");
  }
  requireRoot(ctx);
  const q = await queryClusters(ctx.root, all ? null : names, "auto");
  if (q.records.length === 0) {
    outln("Cluster(s) not found (tip: see `sky status`).");
    return 0;
  }
  if (!p.bool("yes")) {
    const n = q.records.length;
    await confirm(`Stopping ${n} cluster${n > 1 ? "s" : ""}: ${q.records.map((r) => r.name).join(", ")}. Proceed?`, true);
  }
  for (const r of q.records) {
    outln(`Stopping cluster '${r.name}'... skipped.`);
    outln(
      r.cluster.spot ? "  Stopping spot instances is currently not supported on GCP." : "  Stopping is currently not supported for GCP.",
    );
    outln(`  To terminate the cluster instead, run: sky down ${r.name}`);
  }
  return 0;
}
