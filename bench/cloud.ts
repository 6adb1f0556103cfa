// The benchmark's view of the simulated cloud: it runs the real binary with the environment a user's shell
// would have, and reads what the simulation records (sshd logs, the sim's call logs, the hosts' files). Nothing
// here reaches into tpu-deploy's process.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readCalls, readState, type CallKind, type SimHost } from "../test/sim/state.js";
import { repoRoot, type Sim } from "../test/sim/sim.js";
import { type Finished, type Running, start, tail } from "./proc.js";

export interface ProductHost {
  rank: number;
  sshAlias: string;
  externalIp: string;
  internalIp: string;
}

export class Cloud {
  readonly bin = join(repoRoot(), "bin", "tpu-deploy.js");
  readonly env: NodeJS.ProcessEnv;
  readonly stateHome: string;

  constructor(readonly sim: Sim) {
    this.stateHome = join(sim.home, ".tpu-deploy");
    this.env = { ...sim.env, TPU_DEPLOY_HOME: this.stateHome };
  }

  /** `tpu-deploy ARGS` as its own process, watched from outside. */
  cli(args: string[], opts: { onLine?: Parameters<typeof start>[1]["onLine"]; sampleMs?: number } = {}): Running {
    // TPD_BENCH_CPU_PROF=DIR: V8 CPU profiles of every tpu-deploy run (where its own CPU time goes).
    const prof = process.env.TPD_BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.TPD_BENCH_CPU_PROF}`] : [];
    return start([process.execPath, ...prof, this.bin, ...args], { env: this.env, cwd: this.sim.home, ...opts });
  }

  /** Runs it to the end; a non-zero exit is the benchmark's failure, with the output to show why. */
  async must(args: string[], opts: Parameters<Cloud["cli"]>[1] = {}): Promise<Finished> {
    const r = await this.cli(args, opts).done;
    if (r.code !== 0) throw new Error(`tpu-deploy ${args.join(" ")} exited ${r.code}:\n${tail(r.lines, 40)}`);
    return r;
  }

  /** The hosts of a deployment's replica as tpu-deploy recorded them (rank, SSH alias, addresses). */
  productHosts(name: string, replica = 0): ProductHost[] {
    const s = JSON.parse(readFileSync(join(this.stateHome, "deployments", name, "state.json"), "utf8")) as {
      replicas: { replica: number; hosts: ProductHost[] }[];
    };
    const r = s.replicas.find((x) => x.replica === replica);
    if (!r) throw new Error(`${name} has no replica ${replica}`);
    return [...r.hosts].sort((a, b) => a.rank - b.rank);
  }

  /** The simulated hosts of a SkyPilot cluster, in TPU worker order. */
  async clusterHosts(cluster: string): Promise<SimHost[]> {
    const s = await readState(this.sim.root);
    const c = s.clusters[cluster];
    if (!c) throw new Error(`the sim has no cluster ${cluster}`);
    return c.slices.flatMap((sl) => sl.hostIds).flatMap((id) => (s.hosts[id] ? [s.hosts[id]] : []));
  }

  /** SSH connections each host's sshd has accepted so far ("Accepted publickey" in its log). */
  acceptedSsh(hostIds: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const id of hostIds) {
      const log = join(this.sim.root, "hosts", id, "sshd.log");
      const text = existsSync(log) ? readFileSync(log, "utf8") : "";
      out.set(id, text.split("\n").filter((l) => l.startsWith("Accepted publickey for ")).length);
    }
    return out;
  }

  async calls(kind: CallKind): Promise<Record<string, unknown>[]> {
    return await readCalls(this.sim.root, kind);
  }

  /**
   * Kills whatever server a host runs for `name` (the process group its pid file names), from outside the
   * host and without SSH, so that the next timed run starts from the same place as the one before.
   */
  async killServers(name: string, hostIds: readonly string[]): Promise<void> {
    const groups: number[] = [];
    for (const id of hostIds) {
      const pidFile = join(this.sim.root, "hosts", id, "home", ".tpu-deploy", name, "server.pid");
      const pg = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim().split(" ")[0]) : Number.NaN;
      if (!Number.isInteger(pg) || pg <= 1) continue;
      try {
        process.kill(-pg, "SIGKILL");
        groups.push(pg);
      } catch {
        // already gone
      }
    }
    // Until no process of those groups is left running (zombies excepted): their ports are free again.
    const deadline = Date.now() + 10_000;
    while (groups.length > 0 && Date.now() < deadline && livingInGroups(new Set(groups))) await sleep(50);
  }
}

function livingInGroups(groups: Set<number>): boolean {
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (f[0] !== "Z" && groups.has(Number(f[2]))) return true;
    } catch {
      // gone
    }
  }
  return false;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
