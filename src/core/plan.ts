// Plan a deployment from a resolved config: the sky task, the `sky launch` argv per zone, and the
// rank plan with every rank's exact server command. Pure: no I/O.
import type { Config } from "./config.js";
import { shellJoin } from "./quote.js";
import { renderTemplate, type TemplateValue } from "./render.js";
import { validateSkyTask } from "./sky-task-schema.js";
import { regionOf } from "./topology.js";

export const LABEL_KEY = "tpu-deploy";

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

export interface RankSpec {
  rank: number;
  slice: number;
  workerId: number;
}

export interface ServerCommand {
  /** The exact argv the host runs (without the API key, which the wrapper injects in-process). */
  argv: string[];
  /** argv quoted for a POSIX shell by the one quoting function. */
  command: string;
}

export interface DeployPlan {
  name: string;
  taskYaml: string;
  task: Record<string, unknown>;
  /** `sky launch` argv for the first zone, with the task path as given. */
  skyArgv: string[];
  zones: string[];
  ranks: (RankSpec & { host: string; server: ServerCommand })[];
  distInitAddr: string;
  warnings: string[];
}

export type PlanResult = { ok: true; plan: DeployPlan } | { ok: false; errors: string[] };

export function taskValues(config: Config, zone: string, spot: boolean): Record<string, TemplateValue> {
  const t = config.topology;
  return {
    name: config.name,
    numNodes: t.sky.numNodes,
    infra: infraFor(zone),
    accelerators: t.sky.accelerators,
    instanceType: t.sky.instanceType,
    runtimeVersion: config.tpu.runtimeVersion,
    spot,
    ports: config.server.public ? [config.server.port] : null,
    labels: { [LABEL_KEY]: config.name, "managed-by": "tpu-deploy" },
    runDurationSeconds: Math.round(config.tpu.maxRunHours * 3600),
    envs: {
      TPD_SGLANG_REPO: config.sglang.repo,
      TPD_SGLANG_REF: config.sglang.ref,
      TPD_PYTHON: config.sglang.python,
      TPD_SGLANG_DIR: config.sglang.dir,
      TPD_SETUP_MARKER: setupMarker(config),
    },
    secrets: config.server.secrets.length > 0 ? Object.fromEntries(config.server.secrets.map((s) => [s, null])) : null,
  };
}

export function infraFor(zone: string): string {
  return `gcp/${regionOf(zone)}/${zone}`;
}

export function renderTask(config: Config, templateText: string, templateName: string, zone: string, spot = config.tpu.spot) {
  const rendered = renderTemplate(templateText, taskValues(config, zone, spot), templateName);
  if (!rendered.ok) return rendered;
  const errors = validateSkyTask(rendered.task).map((e) => `${templateName}: ${e}`);
  if (errors.length > 0) return { ok: false as const, errors };
  return rendered;
}

/**
 * `sky launch` for one zone. Never `-i`/`--down`: SkyPilot counts a cluster as idle when its job queue
 * is empty, and our servers run outside that queue, so it would tear a serving cluster down.
 */
export function skyLaunchArgv(config: Config, taskPath: string, zone: string, spot = config.tpu.spot): string[] {
  return [
    "launch",
    taskPath,
    "-c",
    config.name,
    "--infra",
    infraFor(zone),
    ...(spot ? ["--use-spot"] : []),
    "-y",
    ...Object.entries(config.server.env).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
    // Bare names: SkyPilot reads each value from the environment tpu-deploy passes to it.
    ...config.server.secrets.flatMap((s) => ["--secret", s]),
  ];
}

export function serverCommand(config: Config, rank: number, distInitAddr: string): ServerCommand {
  const multi = config.topology.hosts > 1;
  const argv = [
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
  return { argv, command: shellJoin(argv) };
}

/** Ranks by slice and TPU worker number: rank = slice offset + worker id; slice 0 holds the head. */
export function rankSpecs(config: Config): RankSpec[] {
  const per = config.topology.slice.vmsPerSlice;
  const specs: RankSpec[] = [];
  for (let slice = 0; slice < config.topology.slices; slice++) {
    for (let workerId = 0; workerId < per; workerId++) specs.push({ rank: slice * per + workerId, slice, workerId });
  }
  return specs;
}

export function planDeploy(config: Config, templateText: string, templateName: string, taskPath: string): PlanResult {
  const zone = config.tpu.zones[0];
  if (zone === undefined) return { ok: false, errors: ["no zone to launch in"] };
  const rendered = renderTask(config, templateText, templateName, zone);
  if (!rendered.ok) return rendered;
  const distInitAddr = `<rank-0-internal-ip>:${config.server.distPort}`;
  const ranks = rankSpecs(config).map((spec) => ({
    ...spec,
    host: `<slice ${spec.slice} worker ${spec.workerId}>`,
    server: serverCommand(config, spec.rank, distInitAddr),
  }));
  return {
    ok: true,
    plan: {
      name: config.name,
      taskYaml: rendered.yaml,
      task: rendered.task,
      skyArgv: skyLaunchArgv(config, taskPath, zone),
      zones: config.tpu.zones,
      ranks,
      distInitAddr,
      warnings: config.warnings,
    },
  };
}
