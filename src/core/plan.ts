// The deployment plan: everything `up` will do, computed from the config and the template before anything
// runs. `--dry-run` prints this object and `up` executes this object (app/deploy.ts), so the two cannot
// drift. Per replica (one SkyPilot cluster each): the rendered task and `sky launch` argv per zone, the rank
// rule with every rank's server argv, the rendezvous ports to check and what setup must have left. Pure.
import { OWNER_LABEL } from "./ownership.js";
import type { Config } from "./config.js";
import { shellJoin } from "./quote.js";
import { renderTemplate, type TemplateValue } from "./render.js";
import { validateSkyTask } from "./sky-task-schema.js";
import { clusterName } from "./state.js";
import { regionOf } from "./topology.js";

export const LABEL_KEY = "tpu-deploy";
export const REPLICA_LABEL = "tpu-deploy-replica";
export const MANAGED_BY = { key: "managed-by", value: "tpu-deploy" } as const;
/** Stands for rank 0's internal IPv4 until the hosts are known; `bindRank` fills it in. */
export const RANK0_IP = "<rank-0-internal-ip>";

/** The interpreter the server runs: <sglang.dir>/.venv/bin/python (absolute or ~/, never relative). */
export function venvPython(config: Config): string {
  return `${config.sglang.dir}/.venv/bin/python`;
}

/**
 * The file the task's setup writes last on every host (templates: `touch "$TPD_SETUP_MARKER"`); the start
 * checks it, because `sky launch`'s exit code alone does not prove setup finished everywhere (skypilot#8928).
 */
export function setupMarker(config: Config): string {
  return `${config.sglang.dir}/.venv/.tpu-deploy-installed-${config.sglang.ref.replace(/[^A-Za-z0-9._-]/g, "_")}`;
}

export interface Template {
  text: string;
  /** Shown in messages: `templates/v6e.sky.yaml` or the user's path. */
  name: string;
}

export interface ZoneLaunch {
  zone: string;
  /** The task file as written for this zone. */
  taskYaml: string;
  task: Record<string, unknown>;
  /** `sky launch` argv (without the `sky` itself). */
  skyArgv: string[];
}

export interface RankPlan {
  /** = the host's TPU worker number within the replica's slice. */
  rank: number;
  workerId: number;
  /** Which host this will be, before the hosts exist. */
  host: string;
  /** The server's argv; `--dist-init-addr` holds RANK0_IP until bindRank. */
  argv: string[];
}

export interface ReplicaPlan {
  replica: number;
  /** The SkyPilot cluster of this replica. */
  cluster: string;
  spot: boolean;
  /** Where the rendered task is written before `sky launch` reads it. */
  taskPath: string;
  /** One per zone, tried in this order (capacity and quota failures move on to the next). */
  launches: ZoneLaunch[];
  ranks: RankPlan[];
  /** `RANK0_IP:P` for several hosts, "" for one. */
  distInitAddr: string;
  /** Ports on rank 0 every other rank must reach before any server starts (none for one host). */
  portCheck: number[];
  /** What setup must have left on every host before a server starts there. */
  prerequisites: { python: string; marker: string };
}

export interface DeployPlan {
  name: string;
  /** One sentence: the slice, per-replica chips and HBM, and the chips billed. */
  layout: string;
  /** The template's name (the user's path, or templates/<generation>.sky.yaml). */
  template: string;
  generation: string;
  accelerator: string;
  /** Hosts serving one copy of the model (sglang-jax --nnodes) and its --tp-size, in every replica. */
  hosts: number;
  tpSize: number;
  spot: boolean;
  zones: string[];
  /** The replicas this plan launches (all of them for up; one for a relaunch of that replica). */
  replicas: ReplicaPlan[];
  /** Names of the secrets every server receives (values travel over SSH stdin, never through sky). */
  secrets: string[];
  warnings: string[];
}

export type PlanResult = { ok: true; plan: DeployPlan } | { ok: false; errors: string[] };

export interface PlanOptions {
  /** Where replica R's task file goes (the state directory). */
  taskPath(replica: number): string;
  /** Relaunch's zone order and spot choice for one attempt; the config's otherwise. */
  zones?: string[] | undefined;
  spot?: boolean | undefined;
  /** Which replicas to plan; every one of the config's when absent. */
  only?: number[] | undefined;
  /** This installation's id, the value of the owner label (core/ownership.ts); no label when absent. */
  owner?: string | undefined;
}

export function infraFor(zone: string): string {
  return `gcp/${regionOf(zone)}/${zone}`;
}

export function taskValues(config: Config, zone: string, spot: boolean, replica = 0, owner?: string): Record<string, TemplateValue> {
  const t = config.topology;
  return {
    name: clusterName(config.name, replica),
    numNodes: t.sky.numNodes,
    infra: infraFor(zone),
    accelerators: t.sky.accelerators,
    instanceType: t.sky.instanceType,
    runtimeVersion: config.tpu.runtimeVersion,
    spot,
    ports: config.server.public ? [config.server.port] : null,
    labels: {
      [LABEL_KEY]: config.name,
      [REPLICA_LABEL]: String(replica),
      ...(owner === undefined ? {} : { [OWNER_LABEL]: owner }),
      [MANAGED_BY.key]: MANAGED_BY.value,
    },
    runDurationSeconds: Math.round(config.tpu.maxRunHours * 3600),
    // TPU7x: the slice's physical topology, which the workload policy of its instance group needs.
    acceleratorTopology: config.tpu.generation === "v7" ? t.slice.topology : null,
    envs: {
      TPD_SGLANG_REPO: config.sglang.repo,
      TPD_SGLANG_REF: config.sglang.ref,
      TPD_PYTHON: config.sglang.python,
      TPD_SGLANG_DIR: config.sglang.dir,
      TPD_SETUP_MARKER: setupMarker(config),
    },
    // Secrets never go through SkyPilot: it writes a task's secrets in plain text into the job driver
    // file on the head (~/.sky/sky_app/sky_job_<id>). The server gets them over SSH (app/start.ts).
    secrets: null,
  };
}

export function renderTask(config: Config, template: Template, zone: string, spot = config.tpu.spot, replica = 0, owner?: string) {
  const rendered = renderTemplate(template.text, taskValues(config, zone, spot, replica, owner), template.name);
  if (!rendered.ok) return rendered;
  const errors = validateSkyTask(rendered.task).map((e) => `${template.name}: ${e}`);
  if (errors.length > 0) return { ok: false as const, errors };
  return rendered;
}

/**
 * `sky launch` for one zone. Never `-i`/`--down`: SkyPilot counts a cluster as idle when its job queue
 * is empty, and our servers run outside that queue, so it would tear a serving cluster down. Never
 * `--secret`: see taskValues.
 */
export function skyLaunchArgv(config: Config, taskPath: string, zone: string, spot = config.tpu.spot, replica = 0): string[] {
  return [
    "launch",
    taskPath,
    "-c",
    clusterName(config.name, replica),
    "--infra",
    infraFor(zone),
    ...(spot ? ["--use-spot"] : []),
    "-y",
    ...Object.entries(config.server.env).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
  ];
}

export function serverArgv(config: Config, rank: number, distInitAddr: string): string[] {
  const multi = config.topology.hosts > 1;
  return [
    venvPython(config),
    "-u",
    "-m",
    "sgl_jax.launch_server",
    "--model-path",
    config.model.path,
    "--nnodes",
    String(config.topology.hosts),
    "--node-rank",
    String(rank),
    ...(multi ? ["--dist-init-addr", distInitAddr] : []),
    "--tp-size",
    String(config.server.tpSize),
    "--host",
    "0.0.0.0",
    "--port",
    String(config.server.port),
    ...config.server.args,
  ];
}

/** A rank's argv with rank 0's internal address in place of RANK0_IP. */
export function bindRank(rank: RankPlan, rank0InternalIp: string): string[] {
  return rank.argv.map((a) => a.replace(RANK0_IP, rank0InternalIp));
}

/**
 * Spot replicas start from different zones (replica R from zone R of the list, wrapping), so one preemption
 * wave in one zone does not take every replica; the rest of the list stays the failover order.
 */
export function replicaZones(zones: readonly string[], replica: number, spot: boolean): string[] {
  if (!spot || zones.length < 2) return [...zones];
  const k = replica % zones.length;
  return [...zones.slice(k), ...zones.slice(0, k)];
}

export function planReplica(
  config: Config,
  template: Template,
  replica: number,
  opts: PlanOptions,
): { ok: true; replica: ReplicaPlan } | { ok: false; errors: string[] } {
  const spot = opts.spot ?? config.tpu.spot;
  const zones = replicaZones(opts.zones ?? config.tpu.zones, replica, spot);
  if (zones.length === 0) return { ok: false, errors: ["no zone to launch in"] };
  const taskPath = opts.taskPath(replica);
  const launches: ZoneLaunch[] = [];
  for (const zone of zones) {
    const rendered = renderTask(config, template, zone, spot, replica, opts.owner);
    if (!rendered.ok) return rendered;
    launches.push({ zone, taskYaml: rendered.yaml, task: rendered.task, skyArgv: skyLaunchArgv(config, taskPath, zone, spot, replica) });
  }
  const multi = config.topology.hosts > 1;
  const distInitAddr = multi ? `${RANK0_IP}:${config.server.distPort}` : "";
  // Rank = TPU worker number: JAX's process id and libtpu's worker id agree (docs/upstream/sglang-jax.md §7).
  const ranks = Array.from({ length: config.topology.hosts }, (_, w) => ({
    rank: w,
    workerId: w,
    host: `TPU worker ${w}`,
    argv: serverArgv(config, w, distInitAddr),
  }));
  const P = config.server.distPort;
  return {
    ok: true,
    replica: {
      replica,
      cluster: clusterName(config.name, replica),
      spot,
      taskPath,
      launches,
      ranks,
      distInitAddr,
      portCheck: multi ? [P, P + 5, P + 6] : [],
      prerequisites: { python: venvPython(config), marker: setupMarker(config) },
    },
  };
}

export function planDeploy(config: Config, template: Template, opts: PlanOptions): PlanResult {
  const which = opts.only ?? Array.from({ length: config.replicas }, (_, i) => i);
  const replicas: ReplicaPlan[] = [];
  for (const r of which) {
    const planned = planReplica(config, template, r, opts);
    if (!planned.ok) return planned;
    replicas.push(planned.replica);
  }
  return {
    ok: true,
    plan: {
      name: config.name,
      layout: config.topology.layout,
      template: template.name,
      generation: config.tpu.generation,
      accelerator: config.tpu.accelerator,
      hosts: config.topology.hosts,
      tpSize: config.server.tpSize,
      spot: opts.spot ?? config.tpu.spot,
      zones: opts.zones ?? config.tpu.zones,
      replicas,
      secrets: config.server.secrets,
      warnings: config.warnings,
    },
  };
}

/** The server command of a rank as one shell line (for people; the host receives it via run.sh). */
export function commandLine(argv: readonly string[]): string {
  return shellJoin(argv);
}
