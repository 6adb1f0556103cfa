// The task-building half of `sky launch` and `sky exec` (command.py
// _make_task_or_dag_from_entrypoint_with_overrides and _handle_infra_cloud_region_zone_options).
import { usageError, type CommandSpec, type Parsed } from "./click.js";
import { exc } from "./errors.js";
import { confirm, outln } from "./io.js";
import { pyStr } from "./pyfmt.js";
import {
  applyOverrides,
  checkEntrypoint,
  checkNumNodes,
  CliConfigError,
  parseCliConfig,
  parseInfra,
  taskFromCommand,
  taskFromYamlConfig,
  type Overrides,
  type Task,
} from "./task.js";

export interface BuiltTask {
  task: Task;
  isYaml: boolean;
  entrypoint: string;
  cliConfig: Record<string, unknown>;
}

function mergePairs(file: Record<string, string> | null, pairs: [string, string][]): [string, string][] {
  if (!file) return pairs;
  const d: Record<string, string> = { ...file };
  for (const [k, v] of pairs) d[k] = v;
  return Object.entries(d);
}

export async function buildTask(
  spec: CommandSpec,
  p: Parsed,
  entrypointParts: string[],
  command: "sky launch" | "sky exec",
): Promise<BuiltTask> {
  const envFile = p.dict("env_file");
  const env = mergePairs(envFile, p.pairs("env"));
  const secretFile = p.dict("secret_file");
  const secret = mergePairs({ ...(envFile ?? {}), ...(secretFile ?? {}) }, p.pairs("secret"));
  if (p.str("git_url") !== null && p.str("workdir") !== null) throw usageError(spec, "Cannot specify both --git-url and --workdir");

  let cloud = p.str("cloud");
  let region = p.str("region");
  let zone = p.str("zone");
  const infra = p.str("infra");
  if (cloud !== null || region !== null || zone !== null) {
    outln("The --cloud, --region, and --zone options are deprecated. Use --infra instead.");
    if (infra !== null) throw exc.value("Cannot specify both --infra and --cloud, --region, or --zone.");
  }
  if (infra !== null) {
    const [c, r, z] = parseInfra(infra);
    cloud = c ?? "*";
    region = r ?? "*";
    zone = z ?? "*";
  }
  let cliConfig: Record<string, unknown> = {};
  try {
    cliConfig = parseCliConfig(p.list("config"));
  } catch (e) {
    if (e instanceof CliConfigError) throw usageError(spec, `Invalid value for '--config': ${e.message}`);
    throw e;
  }

  const entrypoint = entrypointParts.join(" ");
  const check = checkEntrypoint(entrypoint);
  if (!check.isYaml && check.yamlFileProvided) {
    await confirm(
      `${pyStr(entrypoint)} looks like a yaml path but ${check.invalidReason}\nIt will be treated as a command to be run remotely. Continue?`,
      false,
    );
  }
  if (check.isYaml) outln(`YAML to run: ${entrypoint}`);
  else if (entrypoint !== "") outln(`Command to run: ${entrypoint}`);

  const o: Overrides = {};
  const none = (v: string) => v.toLowerCase() === "none";
  if (cloud !== null) o.cloud = none(cloud) || cloud === "*" ? null : cloud;
  if (region !== null) o.region = none(region) || region === "*" ? null : region;
  if (zone !== null) o.zone = none(zone) || zone === "*" ? null : zone;
  const gpus = p.str("gpus");
  if (gpus !== null) o.accelerators = none(gpus) ? null : gpus;
  const cpus = p.str("cpus");
  if (cpus !== null) o.cpus = none(cpus) ? null : cpus;
  const memory = p.str("memory");
  if (memory !== null) o.memory = none(memory) ? null : memory;
  const it = p.str("instance_type");
  if (it !== null) o.instanceType = none(it) ? null : it;
  const spot = p.tri("use_spot");
  if (spot !== null) o.useSpot = spot;
  const disk = p.int("disk_size");
  if (disk !== null) o.diskSize = disk;
  const ports = p.list("ports");
  if (ports.length > 0) {
    if (ports.some(none)) {
      if (ports.length > 1) throw exc.value('Cannot specify both "none" and other ports.');
      o.ports = null;
    } else o.ports = ports;
  }
  if (command === "sky exec") {
    const ignored: [string, unknown][] = [
      ["cpus", o.cpus],
      ["memory", o.memory],
      ["disk_size", o.diskSize],
      ["disk_tier", p.str("disk_tier")],
      ["ports", o.ports === undefined ? undefined : o.ports],
    ];
    for (const [k, v] of ignored) {
      if (v !== undefined && v !== null)
        outln(`Override param ${k}=${Array.isArray(v) ? `(${v.map((x) => pyStr(String(x))).join(", ")},)` : String(v)} is ignored.`);
    }
    delete o.cpus;
    delete o.memory;
    delete o.diskSize;
    delete o.ports;
  }

  let task: Task;
  if (check.isYaml) {
    if (check.docCount > 1) {
      throw usageError(
        spec,
        command === "sky exec"
          ? "YAML specifies a DAG, while `sky exec` supports a single task only."
          : "YAML specifies a DAG which is only supported by `sky jobs launch`. `sky launch` supports a single task only.",
      );
    }
    task = taskFromYamlConfig(check.config, env, secret);
  } else {
    task = taskFromCommand(entrypoint === "" ? null : entrypoint, env, secret);
  }
  applyOverrides(task, o);
  const numNodes = p.int("num_nodes");
  if (numNodes !== null) {
    checkNumNodes(numNodes);
    task.numNodes = numNodes;
  }
  const name = p.str("name");
  if (name !== null) task.name = name;
  return { task, isYaml: check.isYaml, entrypoint, cliConfig };
}

// The command line as SkyPilot records it (last_creation_command), with secret values redacted.
export function redactedCommand(command: string, argv: string[]): string {
  return [command, ...redactArgv(argv)].join(" ");
}

export function redactArgv(argv: string[]): string[] {
  const out: string[] = [];
  let secretNext = false;
  for (const a of argv) {
    if (secretNext) {
      out.push(a.includes("=") ? `${a.slice(0, a.indexOf("="))}=<redacted>` : a);
      secretNext = false;
      continue;
    }
    if (a === "--secret") {
      out.push(a);
      secretNext = true;
      continue;
    }
    if (a.startsWith("--secret=")) {
      const v = a.slice("--secret=".length);
      out.push(v.includes("=") ? `--secret=${v.slice(0, v.indexOf("="))}=<redacted>` : a);
      continue;
    }
    out.push(a);
  }
  return out;
}
