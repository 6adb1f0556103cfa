// Flags that map onto config keys, shared by every command that takes a deployment spec (up, render, ...).
import { type Command, Option } from "commander";
import { UsageError } from "../errors.js";

export interface SpecFlags {
  config?: string;
  name?: string;
  tpu?: string;
  accelerator?: string;
  nodes?: number;
  replicas?: number;
  topology?: string;
  model?: string;
  spot?: boolean;
  zone?: string[];
  project?: string;
  port?: number;
  distPort?: number;
  tpSize?: number;
  serverArg?: string[];
  env?: string[];
  secret?: string[];
  secretsFile?: string;
  apiKeySecret?: string;
  public?: boolean;
  readyTimeout?: string;
  launchTimeout?: string;
  template?: string;
  sglangRef?: string;
  sglangDir?: string;
}

export function int(flag: string) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw.trim())) throw new UsageError(`${flag} takes a whole number, got '${raw}'`);
    return Number(raw);
  };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function addSpecOptions(cmd: Command): Command {
  return cmd
    .option("-c, --config <file>", "config file (default: ./tpu-deploy.yaml when present)")
    .option("-n, --name <name>", "deployment name (SkyPilot cluster name)")
    .addOption(new Option("--tpu <generation>", "TPU generation").choices(["v6e", "v7"]))
    .option("--accelerator <type>", "slice type, e.g. v6e-32 or tpu7x-16 (default: derived from --tpu and --nodes)")
    .option("--nodes <n>", "TPU VM hosts of one slice serving the model together (sglang-jax --nnodes)", int("--nodes"))
    .option("--replicas <r>", "independent copies of the slice, each its own SkyPilot cluster (default 1)", int("--replicas"))
    .option("--topology <t>", "TPU7x slice by its topology, e.g. 2x2x2")
    .option("--model <path>", "model to serve (sglang-jax --model-path)")
    .option("--spot", "use spot capacity (v6e)")
    .option("--no-spot", "use on-demand capacity")
    .option("--zone <zone>", "zone to try, in order (repeatable)", collect)
    .option("--project <id>", "GCP project (default: GOOGLE_CLOUD_PROJECT)")
    .option("--port <n>", "server HTTP port", int("--port"))
    .option("--dist-port <n>", "rendezvous port P on rank 0 (P, P+5, P+6 must be open)", int("--dist-port"))
    .option("--tp-size <n>", "sglang-jax --tp-size; checked against the slice", int("--tp-size"))
    .option("--server-arg <arg>", "extra sglang-jax flag, e.g. --server-arg=--page-size=64 (repeatable)", collect)
    .option("--env <K=V>", "server environment variable (repeatable)", collect)
    .option("--secret <NAME>", "secret passed to the server by name; value from the environment or --secrets-file (repeatable)", collect)
    .option("--secrets-file <file>", "0600 KEY=value file with secret values")
    .option("--api-key-secret <NAME>", "secret that becomes sglang-jax's --api-key")
    .option("--public", "open the server port to the internet through SkyPilot")
    .option("--ready-timeout <duration>", "how long to wait for the cluster to serve (default 45m)")
    .option("--launch-timeout <duration>", "how long sky launch may take in one zone (default 20m)")
    .option("--template <file>", "sky.yaml template to render instead of the built-in one")
    .option("--sglang-ref <ref>", "sglang-jax git ref to install")
    .option("--sglang-dir <path>", "where setup installs sglang-jax on the hosts (absolute or ~/; default ~/sglang-jax)");
}

const FLAG_NAMES: Record<string, string> = {
  name: "--name",
  "tpu.generation": "--tpu",
  "tpu.accelerator": "--accelerator",
  "tpu.nodes": "--nodes",
  replicas: "--replicas",
  "tpu.topology": "--topology",
  "tpu.spot": "--spot",
  "tpu.zones": "--zone",
  "tpu.project": "--project",
  "model.path": "--model",
  "server.port": "--port",
  "server.distPort": "--dist-port",
  "server.tpSize": "--tp-size",
  "server.args": "--server-arg",
  "server.env": "--env",
  "server.secrets": "--secret",
  "server.secretsFile": "--secrets-file",
  "server.apiKeySecret": "--api-key-secret",
  "server.public": "--public",
  "server.readyTimeout": "--ready-timeout",
  "launch.timeout": "--launch-timeout",
  "launch.template": "--template",
  "sglang.ref": "--sglang-ref",
  "sglang.dir": "--sglang-dir",
};

export function flagName(path: string): string {
  const top = path.split(".").slice(0, 2).join(".");
  return FLAG_NAMES[top] ?? FLAG_NAMES[path] ?? path;
}

/** The flags as a config-shaped object (only what was given), for resolveConfig. */
export function flagsToConfig(f: SpecFlags): Record<string, unknown> {
  const env: Record<string, string> = {};
  for (const pair of f.env ?? []) {
    const i = pair.indexOf("=");
    if (i <= 0) throw new UsageError(`--env takes KEY=VALUE, got '${pair}'`, { hint: "secrets go in with --secret NAME" });
    env[pair.slice(0, i)] = pair.slice(i + 1);
  }
  const prune = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const section = (o: Record<string, unknown>) => {
    const p = prune(o);
    return Object.keys(p).length > 0 ? p : undefined;
  };
  return prune({
    name: f.name,
    replicas: f.replicas,
    tpu: section({
      generation: f.tpu,
      accelerator: f.accelerator,
      nodes: f.nodes,
      topology: f.topology,
      spot: f.spot,
      zones: f.zone,
      project: f.project,
    }),
    model: section({ path: f.model }),
    server: section({
      port: f.port,
      distPort: f.distPort,
      tpSize: f.tpSize,
      args: f.serverArg,
      env: f.env ? env : undefined,
      secrets: f.secret,
      secretsFile: f.secretsFile,
      apiKeySecret: f.apiKeySecret,
      public: f.public,
      readyTimeout: f.readyTimeout,
    }),
    launch: section({ timeout: f.launchTimeout, template: f.template }),
    sglang: section({ ref: f.sglangRef, dir: f.sglangDir }),
  });
}
