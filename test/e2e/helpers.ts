// End-to-end harness: a simulated cloud plus tpu-deploy run in-process (or spawned, for signals) with the
// environment a user's shell would have. The product sees only PATH (fake sky), HOME, GOOGLE_CLOUD_PROJECT
// and TPU_EMULATOR_HOST.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { StateStore } from "../../src/adapters/state-store.js";
import type { DeploymentState, ReplicaState } from "../../src/core/state.js";
import { run } from "../../src/main.js";
import { repoRoot, type Sim, startSim } from "../sim/sim.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json: unknown;
}

export interface E2E {
  sim: Sim;
  env: NodeJS.ProcessEnv;
  stateHome: string;
  cli(
    argv: string[],
    opts?: {
      env?: NodeJS.ProcessEnv;
      signal?: AbortSignal;
      now?: () => Date;
      cwd?: string;
      onStdout?: (text: string) => void;
      onStderr?: (text: string) => void;
    },
  ): Promise<CliResult>;
  spawnCli(argv: string[], opts?: { env?: NodeJS.ProcessEnv }): SpawnedCli;
  /** The raw state file, as written. */
  state(name: string): Record<string, unknown> | undefined;
  /** The state as the product reads it (config resolved from the stored spec). */
  deployment(name: string): DeploymentState;
  /** One replica's state (replica 0 by default). */
  replica(name: string, replica?: number): ReplicaState & { config: DeploymentState["config"] };
  stop(): Promise<void>;
}

export interface SpawnedCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  exit: Promise<number>;
}

export async function startE2E(): Promise<E2E> {
  const sim = await startSim();
  const stateHome = join(sim.home, ".tpu-deploy");
  const env: NodeJS.ProcessEnv = { ...sim.env, TPU_DEPLOY_HOME: stateHome };
  const e2e: E2E = {
    sim,
    env,
    stateHome,
    async cli(argv, opts = {}) {
      const out = new PassThrough();
      const err = new PassThrough();
      let stdout = "";
      let stderr = "";
      out.on("data", (b: Buffer) => {
        stdout += b.toString();
        opts.onStdout?.(stdout);
      });
      err.on("data", (b: Buffer) => {
        stderr += b.toString();
        opts.onStderr?.(stderr);
      });
      const code = await run(
        argv,
        { stdout: out, stderr: err, env: { ...env, ...opts.env }, cwd: opts.cwd ?? sim.home },
        opts.signal ?? new AbortController().signal,
        opts.now ? { now: opts.now } : {},
      );
      let json: unknown;
      if (argv.includes("--json")) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
      }
      return { code, stdout, stderr, json };
    },
    spawnCli(argv, opts = {}) {
      const bin = join(repoRoot(), "bin", "tpu-deploy.js");
      const child = spawn(process.execPath, [bin, ...argv], {
        env: { ...env, ...opts.env },
        cwd: sim.home,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      const waiters: { re: RegExp; resolve: () => void }[] = [];
      const check = () => {
        for (const w of [...waiters]) {
          if (w.re.test(stdout) || w.re.test(stderr)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
        }
      };
      child.stdout?.on("data", (b: Buffer) => {
        stdout += b.toString();
        check();
      });
      child.stderr?.on("data", (b: Buffer) => {
        stderr += b.toString();
        check();
      });
      const exit = new Promise<number>((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1))));
      return {
        child,
        stdout: () => stdout,
        stderr: () => stderr,
        exit,
        waitFor(re, timeoutMs = 60_000) {
          return new Promise<void>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}; stderr:\n${stderr.slice(-3000)}`)), timeoutMs);
            waiters.push({
              re,
              resolve: () => {
                clearTimeout(t);
                resolve();
              },
            });
            check();
          });
        },
      };
    },
    state(name) {
      const p = join(stateHome, "deployments", name, "state.json");
      return existsSync(p) ? (JSON.parse(readFileSync(p, "utf8")) as Record<string, unknown>) : undefined;
    },
    deployment(name) {
      const s = new StateStore(env).read(name);
      if (!s) throw new Error(`no state for ${name}`);
      return s;
    },
    replica(name, replica = 0) {
      const s = e2e.deployment(name);
      const r = s.replicas.find((x) => x.replica === replica);
      if (!r) throw new Error(`${name} has no replica ${replica}`);
      return { ...r, config: s.config };
    },
    stop: () => sim.stop(),
  };
  return e2e;
}

/** The double's view of the cluster, fetched from rank 0 through the product's own proxy-free path: /get_server_info via a host. */
export async function serverInfo(
  sim: Sim,
  rank0HostId: string,
  internalIp: string,
  port = 30000,
  apiKey?: string,
): Promise<Record<string, unknown>> {
  const auth = apiKey ? `-H 'Authorization: Bearer ${apiKey}'` : "";
  const r = await sim.execOnHost(
    rank0HostId,
    `python3 -c "import urllib.request,sys; r=urllib.request.Request('http://${internalIp}:${port}/get_server_info'${apiKey ? `, headers={'Authorization':'Bearer ${apiKey}'}` : ""}); print(urllib.request.urlopen(r, timeout=10).read().decode())"`,
  );
  void auth;
  if (r.code !== 0) throw new Error(`get_server_info failed on ${rank0HostId}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
