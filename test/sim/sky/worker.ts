// The API server's executor for one `sky.launch` request: provisions (with zone failover and the faults
// of faults.json), then submits the job. It runs detached in its own session so that the client can be
// interrupted without stopping it; `sky api cancel` kills it. Spec (with secrets) arrives on stdin.
import { createPublicKey, generateKeyPairSync, randomBytes, randomInt, randomUUID } from "node:crypto";
import { appendFileSync, existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHosts, killHosts, type HostSpec } from "../hosts.js";
import { readFaults, readState, updateState, type SimCluster, type SimSlice } from "../state.js";
import { processAlive, teardownCluster } from "./cluster.js";
import { SkyException, exc } from "./errors.js";
import { submitJob } from "./jobs.js";
import { nameOnCloud, tpuNodeId } from "./names.js";
import type { Candidate } from "./optimizer.js";
import { pyStr, renderTable } from "./pyfmt.js";
import { readStdin } from "./io.js";
import {
  listRequests,
  readClusterMeta,
  requestLogPath,
  serverDir,
  updateClusterMeta,
  updateRequest,
  writeClusterMeta,
  type ClusterMeta,
} from "./server-db.js";

export interface LaunchSpec {
  root: string;
  requestId: string;
  clusterName: string;
  candidates: Candidate[];
  numNodes: number;
  taskRepr: string;
  retryUntilUp: boolean;
  autostopMinutes: number;
  toDown: boolean;
  waitFor: string;
  noSetup: boolean;
  task: { name: string | null; setup: string | null; run: string | null; envs: Record<string, string>; secrets: Record<string, string> };
  userName: string;
  userHash: string;
  lastCreationYaml: string | null;
  lastCreationCommand: string;
  env: Record<string, string>;
  // An existing INIT/STOPPED cluster to relaunch where it was (null: a new cluster).
  relaunch: { prevStatus: string; candidate: Candidate; everUp: boolean } | null;
  notice: string | null; // a line the provisioner logs first
  // gcp.ssh_proxy_command of the effective config: one command, or one per region (sky/clouds/gcp.py
  // make_deploy_resources_variables puts the region's into the cluster yaml's auth.ssh_proxy_command).
  sshProxyCommand: string | Record<string, string> | null;
}

const RETRY_GAP_MS = 30_000;

class ProvisionFailure {
  constructor(
    readonly message: string,
    readonly block: "zone" | "region",
  ) {}
}

function eid(): string {
  return `0x${randomBytes(8).toString("hex")}`;
}

async function main(): Promise<void> {
  const spec = JSON.parse(await readStdin()) as LaunchSpec;
  const logPath = requestLogPath(spec.root, spec.requestId);
  const log = (line: string) => appendFileSync(logPath, line + "\n");
  await updateRequest(spec.root, spec.requestId, (r) => {
    r.status = "RUNNING";
    r.pid = process.pid;
  });
  try {
    const jobId = await launch(spec, log);
    await updateRequest(spec.root, spec.requestId, (r) => {
      r.status = "SUCCEEDED";
      r.finishedAt = Date.now() / 1000;
      r.result = { jobId };
    });
  } catch (e) {
    const err =
      e instanceof SkyException
        ? { pyClass: e.pyClass, message: e.message }
        : { pyClass: "RuntimeError", message: String(e instanceof Error ? e.message : e) };
    if (!(e instanceof SkyException)) process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await updateRequest(spec.root, spec.requestId, (r) => {
      r.status = "FAILED";
      r.finishedAt = Date.now() / 1000;
      r.error = err;
    });
  }
}

async function launch(spec: LaunchSpec, log: (line: string) => void): Promise<number | null> {
  const { root, clusterName } = spec;
  // The per-cluster lock: a second launch of the same cluster waits for the first to finish.
  while (otherLaunchInFlight(root, clusterName, spec.requestId)) await sleep(200);
  const existing = (await readState(root)).clusters[clusterName];
  const first = spec.candidates[0];
  if (existing && existing.status === "UP" && readClusterMeta(root, clusterName)) {
    log(`⚙︎ Launching on GCP ${existing.region} (${existing.zone}).`);
    log("└── Instances are up.");
    await updateClusterMeta(root, clusterName, (m) => {
      m.launchRequestId = spec.requestId;
      m.lastCreationCommand = spec.lastCreationCommand;
      if (spec.toDown || spec.autostopMinutes >= 0) {
        m.autostopMinutes = spec.autostopMinutes >= 0 ? spec.autostopMinutes : m.autostopMinutes;
        m.toDown = spec.toDown;
        m.waitFor = spec.waitFor;
      }
    });
    await updateState(root, (s) => {
      const c = s.clusters[clusterName];
      if (!c) return;
      c.launchedAt = Date.now();
      if (spec.toDown) c.autodown = true;
    });
  } else if (existing && spec.relaunch !== null && readClusterMeta(root, clusterName)) {
    await relaunchExisting(spec, existing, log);
  } else {
    if (!first) throw exc.resourcesUnavailable("No launchable resource found.");
    if (existing) await teardownCluster(root, clusterName);
    if (spec.notice !== null) log(spec.notice);
    await provision(spec, log);
  }
  log(`✓ Cluster launched: ${clusterName}.  View logs: sky logs --provision ${clusterName}`);

  const setup = spec.noSetup ? null : spec.task.setup;
  if (setup === null && spec.task.run === null) return null;
  const c = (await readState(root)).clusters[clusterName];
  const jobId = await submitJob({
    root,
    cluster: clusterName,
    name: spec.task.name,
    setup,
    run: spec.task.run,
    envs: spec.task.envs,
    secrets: spec.task.secrets,
    user: spec.userName,
    userHash: spec.userHash,
    resources: `${spec.numNodes}x[${c?.accelerator ?? "CPU"}:1]`,
    numNodes: spec.numNodes,
    env: spec.env,
  });
  if (setup !== null) log("✓ Setup detached.");
  log(`⚙︎ Job submitted, ID: ${jobId}`);
  return jobId;
}

async function provision(spec: LaunchSpec, log: (line: string) => void): Promise<void> {
  const { root, clusterName } = spec;
  const s0 = await readState(root);
  const first = spec.candidates[0] as Candidate;
  const noc = nameOnCloud(clusterName, s0.userHash);
  const clusterHash = randomUUID();
  const { keyPath, pubKey } = getOrGenerateKeys(root, spec.userHash);
  const meta: ClusterMeta = {
    name: clusterName,
    clusterHash,
    autostopMinutes: spec.autostopMinutes,
    toDown: spec.toDown,
    waitFor: spec.waitFor,
    statusUpdatedAt: Date.now(),
    everUp: false,
    keyPath,
    pubKey,
    acceleratorsRepr: first.acceleratorsRepr,
    resourcesStr: first.resourcesStr,
    resourcesStrFull: first.resourcesStrFull,
    resourcesRepr: first.launchableRepr,
    runtimeVersion: first.runtimeVersion,
    ports: first.ports,
    lastCreationYaml: spec.lastCreationYaml,
    lastCreationCommand: spec.lastCreationCommand,
    provisionLog: requestLogPath(root, spec.requestId),
    configHash: randomBytes(32).toString("hex"),
    nextJobId: 1,
    launchRequestId: spec.requestId,
    userName: spec.userName,
    sshProxyCommand: proxyFor(spec.sshProxyCommand, first.region),
  };
  await writeClusterMeta(root, meta);
  const record: SimCluster = {
    name: clusterName,
    nameOnCloud: noc,
    status: "INIT",
    zone: first.zone,
    region: first.region,
    spot: first.useSpot,
    accelerator: first.accelerator,
    instanceType: first.kind === "tpu7x" ? first.instanceType : null,
    numNodes: spec.numNodes,
    labels: first.labels,
    launchedAt: Date.now(),
    clusterHash,
    slices: [],
    headHostId: "",
    jobs: [],
    lastEvent: null,
    autodown: spec.toDown,
  };
  await updateState(root, (s) => {
    s.clusters[clusterName] = record;
  });
  if (first.useSpot) {
    log(
      "Launching a spot job that does not automatically recover from preemptions. To get automatic recovery, use managed job instead: sky jobs launch or sky.jobs.launch().",
    );
  }

  for (;;) {
    let delayed = false;
    const failures: { cand: Candidate; reason: string }[] = [];
    const blockedRegions = new Set<string>();
    const blockedZones = new Set<string>();
    for (const cand of spec.candidates) {
      if (blockedRegions.has(cand.region) || blockedZones.has(cand.zone)) continue;
      log(`⚙︎ Launching on GCP ${cand.region} (${cand.zone}).`);
      if (!delayed) {
        // faults.json sky.provisionDelayMs: how long one launch's provisioning takes.
        delayed = true;
        const delay = (await readFaults(root)).sky?.provisionDelayMs ?? 0;
        if (delay > 0) await sleep(delay);
      }
      await updateState(root, (s) => {
        const c = s.clusters[clusterName];
        if (c) {
          c.zone = cand.zone;
          c.region = cand.region;
        }
      });
      let r: ProvisionFailure | null;
      try {
        r = await tryZone(spec, cand, noc, pubKey, log);
      } catch (e) {
        // An unexpected failure (e.g. a host that never came up) must not leave half a cluster behind.
        await teardownCluster(root, clusterName).catch(() => undefined);
        throw e;
      }
      if (r === null) {
        await markUp(root, clusterName, cand, spec.sshProxyCommand);
        log("└── Instances are up.");
        return;
      }
      log(r.message);
      failures.push({ cand, reason: `Failed to acquire resources in ${cand.zone} for {${cand.launchableRepr}}. ${r.message}` });
      if (r.block === "region") blockedRegions.add(cand.region);
      else blockedZones.add(cand.zone);
    }
    const table = renderTable(
      ["INFRA", "RESOURCES", "REASON"],
      failures.map((f) => [`GCP (${f.cand.zone})`, f.cand.shortRepr, f.reason]),
    );
    const message =
      `Failed to provision all possible launchable resources. Relax the task's resource requirements: ${spec.numNodes}x ${spec.taskRepr}\n` +
      "To keep retrying until the cluster is up, use the `--retry-until-up` flag.\n" +
      "Reasons for provision failures (for details, please check the log above):\n" +
      table;
    log(`⨯ Failed to provision resources.  View logs: sky logs --provision ${clusterName}`);
    if (!spec.retryUntilUp) {
      await teardownCluster(root, clusterName);
      throw exc.resourcesUnavailable(message);
    }
    log(`sky.exceptions.ResourcesUnavailableError: ${message}`);
    log(`↺ Retry after ${RETRY_GAP_MS / 1000}s  View logs: sky api logs ${spec.requestId.slice(0, 8)}`);
    await new Promise((r) => setTimeout(r, RETRY_GAP_MS));
  }
}

// One provisioning attempt in one zone; null on success.
// skypilot-org/skypilot sky/provision/gcp/instance_utils.py _format_and_log_message_from_errors: one (code, message) per failed operation, codes repr()ed
// and messages repr()ed without their surrounding dots; "return codes" when there is more than one.
export function gotReturnCodes(errors: { code: string | number; message: string }[], zone: string): string {
  const plural = errors.length > 1 ? "s" : "";
  const codes = errors.map((e) => (typeof e.code === "number" ? String(e.code) : pyStr(e.code))).join(", ");
  const messages = errors.map((e) => pyStr(e.message.replace(/^\.+|\.+$/g, ""))).join("; ");
  return `Got return code${plural} ${codes} in ${zone}: ${messages}`;
}

// One provisioning attempt in one zone; null on success. `keep` are slices (by node index) of an existing
// cluster that are healthy and reused as they are.
async function tryZone(
  spec: LaunchSpec,
  cand: Candidate,
  noc: string,
  pubKey: string,
  log: (line: string) => void,
  keep: Map<number, SimSlice> = new Map(),
  previous: SimSlice[] = [],
): Promise<ProvisionFailure | null> {
  const { root, clusterName } = spec;
  const faults = (await readFaults(root)).sky ?? {};
  // GCPTPUVMInstance.create_instances makes one TPU node per cluster node, each its own operation, so each
  // node that cannot be made is one error; a TPU7x managed instance group is one operation.
  const failing = cand.kind === "v6e" ? spec.numNodes - keep.size : keep.size > 0 ? 0 : 1;
  const each = (mk: () => { code: string | number; message: string }) => Array.from({ length: failing }, mk);
  if (failing > 0 && (faults.capacityZones ?? []).includes(cand.zone)) {
    if (cand.kind === "v6e") {
      return new ProvisionFailure(
        gotReturnCodes(
          each(() => ({
            code: 8,
            message: `There is no more capacity in the zone "${cand.zone}"; you can try in another zone where Cloud TPU Nodes are offered (see https://cloud.google.com/tpu/docs/regions) [EID: ${eid()}]`,
          })),
          cand.zone,
        ),
        "zone",
      );
    }
    const project = (await readState(root)).project;
    return new ProvisionFailure(
      gotReturnCodes(
        each(() => ({
          code: "ZONE_RESOURCE_POOL_EXHAUSTED",
          message: `The zone 'projects/${project}/zones/${cand.zone}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later`,
        })),
        cand.zone,
      ),
      "zone",
    );
  }
  const quota = faults.quota;
  if (failing > 0 && quota && quota.zone === cand.zone) {
    const perRegion = quota.scope === "region";
    const metric =
      cand.kind === "v6e"
        ? `TPUV6E${cand.useSpot ? "Preemptible" : ""}PerProjectPer${perRegion ? "Region" : "Zone"}ForTPUAPI`
        : `TPU7X${cand.useSpot ? "Preemptible" : ""}ChipsPerProjectPer${perRegion ? "Region" : "Zone"}`;
    const where = perRegion ? `region ${cand.region}` : `zone ${cand.zone}`;
    return new ProvisionFailure(
      gotReturnCodes(
        each(() => ({ code: "type.googleapis.com/google.rpc.QuotaFailure", message: `Quota '${metric}' exhausted. Limit 0 in ${where}` })),
        cand.zone,
      ),
      perRegion ? "region" : "zone",
    );
  }
  if (failing > 0 && (faults.preemptDuringCreateZones ?? []).includes(cand.zone)) {
    return new ProvisionFailure(
      gotReturnCodes(
        each(() => ({
          code: 3,
          message: `Cloud TPU received a bad request. update is not supported while in state PREEMPTED [EID: ${eid()}]`,
        })),
        cand.zone,
      ),
      "zone",
    );
  }

  // What of an existing cluster cannot be reused goes (its node, its hosts) before it is made again here.
  const stale = previous.filter((_, i) => !keep.has(i));
  if (stale.length > 0) {
    await killHosts(
      root,
      stale.flatMap((sl) => sl.hostIds),
    );
    await updateState(root, (st) => {
      for (const sl of stale) if (sl.nodeName !== null) delete st.nodes[sl.nodeName];
    });
  }
  const s = await readState(root);
  const project = s.project;
  const specs: HostSpec[] = [];
  const nodes: { name: string | null; count: number; keep?: SimSlice }[] = [];
  if (cand.kind === "v6e") {
    for (let i = 0; i < spec.numNodes; i++) {
      const kept = keep.get(i);
      if (kept) {
        nodes.push({ name: kept.nodeName, count: 0, keep: kept });
        continue;
      }
      const id = tpuNodeId(noc, i === 0);
      const full = `projects/${project}/locations/${cand.zone}/nodes/${id}`;
      nodes.push({ name: full, count: cand.hostsPerNode });
      const labels: Record<string, string> = {
        ...cand.labels,
        "ray-cluster-name": noc,
        "skypilot-cluster-name": noc,
        "ray-node-type": i === 0 ? "head" : "worker",
        "skypilot-head-node": i === 0 ? "1" : "0",
        "skypilot-user": spec.userName.toLowerCase().replace(/[^a-z0-9_-]/g, ""),
        "use-managed-instance-group": "0",
      };
      await updateState(root, (st) => {
        st.nodes[full] = {
          name: full,
          zone: cand.zone,
          acceleratorType: (cand.accelerator ?? "").replace(/^tpu-/, ""),
          runtimeVersion: cand.runtimeVersion ?? "",
          state: "CREATING",
          labels,
          preemptible: cand.useSpot,
          createTime: Date.now(),
          id: String(randomInt(1, 2 ** 47)) + String(randomInt(100000, 999999)),
          hostIds: [],
        };
      });
      for (let w = 0; w < cand.hostsPerNode; w++) {
        specs.push({ cluster: clusterName, nodeName: full, zone: cand.zone, workerId: w, authorizedKeys: [pubKey] });
      }
    }
  } else if (keep.has(0)) {
    nodes.push({ name: null, count: 0, keep: keep.get(0) });
  } else {
    nodes.push({ name: null, count: spec.numNodes });
    for (let w = 0; w < spec.numNodes; w++) {
      specs.push({ cluster: clusterName, nodeName: null, zone: cand.zone, workerId: w, authorizedKeys: [pubKey] });
    }
  }
  const hosts = await createHosts(root, specs);
  let k = 0;
  const slices = nodes.map((n) => {
    if (n.keep) return n.keep;
    const ids = hosts.slice(k, k + n.count).map((h) => h.id);
    k += n.count;
    return { nodeName: n.name, hostIds: ids };
  });
  await updateState(root, (st) => {
    for (const sl of slices) {
      const node = sl.nodeName === null ? undefined : st.nodes[sl.nodeName];
      if (node) node.hostIds = sl.hostIds;
    }
    const c = st.clusters[clusterName];
    if (c) {
      c.slices = slices;
      c.headHostId = slices[0]?.hostIds[0] ?? "";
    }
  });
  if (faults.hangProvision === true) {
    log("└── Waiting for the instances to be ready.");
    // Provisioning never completes; only `sky api cancel` ends this request.
    await new Promise<void>(() => setInterval(() => undefined, 60_000));
  }
  await updateState(root, (st) => {
    for (const sl of slices) {
      const node = sl.nodeName === null ? undefined : st.nodes[sl.nodeName];
      if (node) node.state = "READY";
    }
  });
  return null;
}

function proxyFor(value: LaunchSpec["sshProxyCommand"], region: string): string | null {
  if (value === null || typeof value === "string") return value;
  return value[region] ?? null;
}

async function markUp(root: string, clusterName: string, cand: Candidate, proxy: LaunchSpec["sshProxyCommand"]): Promise<void> {
  await updateClusterMeta(root, clusterName, (m) => {
    m.sshProxyCommand = proxyFor(proxy, cand.region);
    m.acceleratorsRepr = cand.acceleratorsRepr;
    m.resourcesStr = cand.resourcesStr;
    m.resourcesStrFull = cand.resourcesStrFull;
    m.resourcesRepr = cand.launchableRepr;
    m.runtimeVersion = cand.runtimeVersion;
    m.everUp = true;
    m.statusUpdatedAt = Date.now();
  });
  await updateState(root, (s) => {
    const c = s.clusters[clusterName];
    if (c) {
      c.status = "UP";
      c.launchedAt = Date.now();
      c.spot = cand.useSpot;
      c.accelerator = cand.accelerator;
      c.instanceType = cand.kind === "tpu7x" ? cand.instanceType : null;
      c.labels = cand.labels;
    }
  });
}

// An existing INIT (or STOPPED) cluster: skypilot-org/skypilot cloud_vm_ray_backend.py RetryingVmProvisioner._yield_zones tries its previous zone only, with
// handle.launched_resources. Its READY nodes with live hosts are reused; the others are made again there.
async function relaunchExisting(spec: LaunchSpec, existing: SimCluster, log: (line: string) => void): Promise<void> {
  const { root, clusterName } = spec;
  const rl = spec.relaunch;
  const meta = readClusterMeta(root, clusterName);
  if (rl === null || meta === null) throw new Error("relaunchExisting without a relaunch plan");
  const cand = rl.candidate;
  log(`Cluster ${pyStr(clusterName)} (status: ${rl.prevStatus}) was previously in GCP (${existing.region}). Restarting.`);
  log(`⚙︎ Launching on GCP ${cand.region} (${cand.zone}).`);
  const delay = (await readFaults(root)).sky?.provisionDelayMs ?? 0;
  if (delay > 0) await sleep(delay);
  const s = await readState(root);
  const keep = new Map<number, SimSlice>();
  existing.slices.forEach((sl, i) => {
    const node = sl.nodeName === null ? null : s.nodes[sl.nodeName];
    const alive = sl.hostIds.length > 0 && sl.hostIds.every((id) => s.hosts[id]?.alive === true);
    if (alive && (sl.nodeName === null || node?.state === "READY")) keep.set(i, sl);
  });
  const r = await tryZone(spec, cand, existing.nameOnCloud, meta.pubKey, log, keep, existing.slices);
  if (r === null) {
    await updateClusterMeta(root, clusterName, (m) => {
      m.launchRequestId = spec.requestId;
      m.lastCreationCommand = spec.lastCreationCommand;
    });
    await markUp(root, clusterName, cand, spec.sshProxyCommand);
    log("└── Instances are up.");
    return;
  }
  log(r.message);
  if (rl.everUp) {
    // no_failover=True: the record stays, and _locked_provision prints str(e) around its retry hint.
    const msg =
      `Failed to launch cluster ${pyStr(clusterName)} (previous status: ${rl.prevStatus}). ` +
      `To retry launching the cluster, run: sky start ${clusterName}`;
    log(`⨯ Failed to provision resources.  View logs: sky logs --provision ${clusterName}`);
    throw exc.resourcesUnavailable(`${msg}\nTo keep retrying until the cluster is up, use the \`--retry-until-up\` flag.\n${msg}`);
  }
  // Never UP: the attempt with the original resources failed (no_failover=False); the cluster is terminated
  // and provision_with_retries goes on with the requested resources, failing over as for a new cluster.
  log(
    `Failed to launch cluster ${pyStr(clusterName)} (previous status: ${rl.prevStatus}) with the original resources: ` +
      `${existing.numNodes}x ${cand.launchableRepr}.`,
  );
  log(`Retrying provisioning with requested resources: ${spec.numNodes}x ${spec.taskRepr}`);
  await teardownCluster(root, clusterName);
  await provision(spec, log);
}

// skypilot-org/skypilot sky/utils/auth_utils.py get_or_generate_keys: one RSA-2048 key pair per user hash (sky-key, sky-key.pub under
// ~/.sky/clients/<user_hash>/ssh on the API server), reused for every cluster of that user. The private key is
// PKCS#1 PEM and the public key OpenSSH, both .strip()ped: no trailing newline (_generate_rsa_key_pair). SkyPilot
// generates under a file lock, so two launches at once get one key; here the pair lands by link(2), which
// only one writer wins, and a loser waits for the winner's pair.
export function getOrGenerateKeys(root: string, userHash: string): { keyPath: string; pubKey: string } {
  const dir = join(serverDir(root), "clients", userHash, "ssh");
  const keyPath = join(dir, "sky-key");
  const ready = () => existsSync(keyPath) && existsSync(`${keyPath}.pub`);
  if (ready()) return { keyPath, pubKey: readFileSync(`${keyPath}.pub`, "utf8") };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicExponent: 65537,
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "der" },
  });
  const pubKey = openSshRsa(createPublicKey({ key: publicKey, format: "der", type: "spki" }).export({ format: "jwk" }));
  const tmp = `${keyPath}.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(`${tmp}.pub`, pubKey, { mode: 0o644 });
  writeFileSync(tmp, privateKey.trim(), { mode: 0o600 });
  try {
    linkSync(`${tmp}.pub`, `${keyPath}.pub`);
    linkSync(tmp, keyPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    // Another launch won: use its pair once both halves are there.
    const until = Date.now() + 10_000;
    while (!ready() && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(`${tmp}.pub`, { force: true });
  }
  return { keyPath, pubKey: readFileSync(`${keyPath}.pub`, "utf8") };
}

// The OpenSSH public key line for an RSA key (RFC 4253 "ssh-rsa" blob), without a comment.
function openSshRsa(jwk: { n?: string; e?: string }): string {
  const mpint = (b64u: string) => {
    let b = Buffer.from(b64u, "base64url");
    if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
    return b;
  };
  const field = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const blob = Buffer.concat([field(Buffer.from("ssh-rsa")), field(mpint(jwk.e ?? "")), field(mpint(jwk.n ?? ""))]);
  return `ssh-rsa ${blob.toString("base64")}`;
}

function otherLaunchInFlight(root: string, cluster: string, self: string): boolean {
  const all = listRequests(root);
  const mine = all.find((x) => x.requestId === self)?.createdAt ?? Infinity;
  return all.some(
    (r) =>
      r.requestId !== self &&
      r.name === "sky.launch" &&
      r.clusterName === cluster &&
      (r.status === "RUNNING" || r.status === "PENDING") &&
      r.createdAt <= mine &&
      r.pid !== null &&
      processAlive(r.pid),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`launch worker failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
