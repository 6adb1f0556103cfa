// The harness that tests and the demo use: one simulated TPU cloud per startSim(), torn down by stop()
// (also when the process exits without calling it, and by the next startSim() if the process was killed).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { setPriority } from "node:os";
import { fileURLToPath } from "node:url";
import {
  blockPort as blockHostPort,
  cleanupLeftovers,
  ensureNetwork,
  execOnHost as execOnSimHost,
  EXT_GATEWAY,
  killHosts,
  killProcessesOfSim,
  replaceHostKeys as replaceSimHostKeys,
  SIM_ROOT_PREFIX,
  simIdOfRoot,
  teardownSimNetwork,
} from "./hosts.js";
import {
  emptyState,
  readCalls,
  readState,
  updateState,
  writeFaults,
  writeInitialState,
  writeSimConfig,
  type Faults,
  type SimHostKey,
  type SimState,
  type SimTpuNodeState,
} from "./state.js";

export const SIM_PROJECT = "tpd-sim-project";
const SERVICES_START_TIMEOUT_MS = 30_000;

export interface StartSimOptions {
  home?: string;
}

export interface SkyCall {
  t: number;
  argv: string[];
  cwd: string;
  exit: number;
}

export interface Sim {
  root: string;
  project: string;
  env: NodeJS.ProcessEnv;
  home: string;
  setFaults(f: Faults): Promise<void>;
  preempt(cluster: string): Promise<void>;
  // Puts a TPU node (full name or node id) in a Cloud TPU state, as GCP does on its own (maintenance: REPAIRING,
  // a reboot: RESTARTING, a stop: STOPPING, lost contact: UNKNOWN). Its hosts die with it for PREEMPTED,
  // TERMINATED, STOPPING and STOPPED unless opts.killHosts says otherwise.
  setNodeState(node: string, state: SimTpuNodeState, opts?: { killHosts?: boolean }): Promise<void>;
  blockPort(hostId: string, port: number): Promise<void>;
  state(): Promise<SimState>;
  skyCalls(): Promise<SkyCall[]>;
  execOnHost(hostId: string, cmd: string): Promise<{ stdout: string; stderr: string; code: number }>;
  /** New host keys on a running host and its sshd restarted on them; the TPU API still shows the old ones unless publish. */
  replaceHostKeys(hostId: string, opts?: { publish?: boolean }): Promise<SimHostKey[]>;
  stop(): Promise<void>;
}

// The repo root, whether this runs from test/sim/sim.ts (vitest) or dist/test/sim/sim.js.
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, "package.json")) && existsSync(join(d, "test", "sim"))) return d;
    const up = dirname(d);
    if (up === d) throw new Error("cannot find the tpu-deploy repo root above " + fileURLToPath(import.meta.url));
    d = up;
  }
}

export async function startSim(opts: StartSimOptions = {}): Promise<Sim> {
  const repo = repoRoot();
  const servicesJs = join(repo, "dist", "test", "sim", "services.js");
  if (!existsSync(servicesJs)) throw new Error(`${servicesJs} is missing: run \`npm run build\` first`);

  await cleanupLeftovers();
  const root = await mkdtemp(SIM_ROOT_PREFIX);
  const id = simIdOfRoot(root);
  let services: ChildProcess | null = null;
  const home = opts.home ?? join(root, "user-home");
  // Synchronous last-resort cleanup for a process that exits without stop().
  const onExit = () => stopSync(root, services);
  const onSignal = (sig: NodeJS.Signals) => {
    stopSync(root, services);
    process.off(sig, onSignal);
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.on("exit", onExit);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const unregister = () => {
    process.off("exit", onExit);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };

  try {
    await chmod(root, 0o755);
    await writeSimConfig(root, { id, project: SIM_PROJECT, metadataAddr: "", tpuApiPort: 0, createdBy: process.pid });
    await writeInitialState(root, emptyState(SIM_PROJECT, randomBytes(4).toString("hex")));
    await writeFaults(root, {});
    for (const d of ["calls", "requests", "hosts", "keys"]) await mkdir(join(root, d), { mode: 0o755 });
    await mkdir(home, { recursive: true, mode: 0o755 });

    await cp(join(repo, "test", "sim", "host-bin"), join(root, "host-bin"), { recursive: true });
    await writeFile(join(root, "host-bin", "sim.env"), `TPD_SIM_ROOT=${root}\n`, { mode: 0o644 });
    await mkdir(join(root, "pkg"), { mode: 0o755 });
    const sglJax = join(repo, "test", "sim", "sgl_jax");
    if (existsSync(sglJax)) {
      await cp(sglJax, join(root, "pkg", "sgl_jax"), {
        recursive: true,
        filter: (src) => !src.includes("__pycache__"),
      });
    }
    await chmodReadable(root);
    // The sglang-jax double runs as gcpuser on the hosts (where SIM_ROOT is mounted at the same path) and
    // appends its calls/server.jsonl there.
    await chmod(join(root, "calls"), 0o1777);
    await ensureNetwork(id);

    const started = await startServices(servicesJs, root);
    services = started.child;
    const metadataAddr = `${EXT_GATEWAY}:${started.metadataPort}`;
    await writeSimConfig(root, { id, project: SIM_PROJECT, metadataAddr, tpuApiPort: started.tpuApiPort, createdBy: process.pid });
  } catch (e) {
    stopSync(root, services);
    unregister();
    throw e;
  }

  const cfgPath = join(root, "sim.json");
  const tpuApiPort = (JSON.parse(readFileSync(cfgPath, "utf8")) as { tpuApiPort: number }).tpuApiPort;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${join(repo, "test", "sim", "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: home,
    TPD_SIM_ROOT: root,
    TPU_EMULATOR_HOST: `127.0.0.1:${tpuApiPort}`,
    GOOGLE_CLOUD_PROJECT: SIM_PROJECT,
  };

  let stopping: Promise<void> | null = null;
  const sim: Sim = {
    root,
    project: SIM_PROJECT,
    env,
    home,
    async setFaults(f) {
      await writeFaults(root, f);
    },
    async preempt(cluster) {
      const s = await readState(root);
      const c = s.clusters[cluster];
      if (!c) throw new Error(`preempt: no cluster ${cluster} in the sim`);
      if (!c.spot) throw new Error(`preempt: cluster ${cluster} is not spot; on-demand TPU nodes are not preempted`);
      await killHosts(
        root,
        c.slices.flatMap((sl) => sl.hostIds),
      );
      await updateState(root, (st) => {
        const cl = st.clusters[cluster];
        for (const sl of cl?.slices ?? []) {
          const node = sl.nodeName === null ? undefined : st.nodes[sl.nodeName];
          if (node && node.state === "READY") node.state = "PREEMPTED";
        }
      });
    },
    async setNodeState(node, state, opts = {}) {
      const s = await readState(root);
      const full = s.nodes[node] ? node : Object.keys(s.nodes).find((n) => n.endsWith(`/nodes/${node}`));
      const n = full === undefined ? undefined : s.nodes[full];
      if (!n || full === undefined) throw new Error(`setNodeState: no TPU node ${node} in the sim`);
      const kill = opts.killHosts ?? ["PREEMPTED", "TERMINATED", "STOPPING", "STOPPED"].includes(state);
      if (kill) await killHosts(root, n.hostIds);
      await updateState(root, (st) => {
        const cur = st.nodes[full];
        if (cur) cur.state = state;
      });
    },
    async blockPort(hostId, port) {
      await blockHostPort(root, hostId, port);
    },
    async state() {
      return await readState(root);
    },
    async skyCalls() {
      return (await readCalls(root, "sky")).map((c) => ({
        t: Number(c.t),
        argv: Array.isArray(c.argv) ? c.argv.map(String) : [],
        cwd: String(c.cwd ?? ""),
        exit: Number(c.exit),
      }));
    },
    async execOnHost(hostId, cmd) {
      return await execOnSimHost(root, hostId, cmd);
    },
    async replaceHostKeys(hostId, opts = {}) {
      return await replaceSimHostKeys(root, hostId, opts);
    },
    stop() {
      stopping ??= (async () => {
        unregister();
        await stopServices(services);
        killProcessesOfSim(root);
        await teardownSimNetwork(id);
        killProcessesOfSim(root);
        await rm(root, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
  return sim;
}

async function startServices(servicesJs: string, root: string): Promise<{ child: ChildProcess; metadataPort: number; tpuApiPort: number }> {
  const child = spawn(process.execPath, [servicesJs, root], { stdio: ["pipe", "pipe", "pipe"] });
  // On GCP the metadata server and the Cloud TPU API run on Google's machines, not on the VMs' cores. Here they
  // share this machine's cores with every simulated host: a 64-host start (64 doubles at once) starved them
  // until the doubles' metadata reads timed out. They get the CPU first, as their own hardware would give them.
  if (child.pid !== undefined) {
    try {
      setPriority(child.pid, -10);
    } catch {
      // not root: the hosts could not exist either, and the preflight says so
    }
  }
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  return await new Promise((resolvePorts, reject) => {
    let out = "";
    const timer = setTimeout(
      () => fail(new Error(`sim services did not start in ${SERVICES_START_TIMEOUT_MS} ms: ${stderr}`)),
      SERVICES_START_TIMEOUT_MS,
    );
    const fail = (e: Error) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(e);
    };
    child.once("exit", (code) => fail(new Error(`sim services exited (${code}): ${stderr.trim()}`)));
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      try {
        const ports = JSON.parse(out.slice(0, nl)) as { metadataPort: number; tpuApiPort: number };
        resolvePorts({ child, ...ports });
      } catch (e) {
        fail(new Error(`sim services printed ${JSON.stringify(out)}: ${String(e)}`));
      }
    });
  });
}

async function stopServices(child: ChildProcess | null): Promise<void> {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

// The exit-path twin of stop(): only synchronous calls are possible in an 'exit' handler.
function stopSync(root: string, services: ChildProcess | null): void {
  try {
    services?.kill("SIGKILL");
  } catch {
    // already gone
  }
  killProcessesOfSim(root);
  const id = simIdOfRoot(root);
  const netnsDir = "/run/netns";
  const names = existsSync(netnsDir) ? readdirSync(netnsDir).filter((n) => n.startsWith(`tpd-${id}-`)) : [];
  const inodes = new Set<string>();
  for (const n of names) {
    try {
      inodes.add(`net:[${statSync(join(netnsDir, n)).ino}]`);
    } catch {
      // deleted meanwhile
    }
  }
  if (inodes.size > 0) {
    for (const e of readdirSync("/proc")) {
      if (!/^\d+$/.test(e)) continue;
      try {
        if (inodes.has(readlinkSync(`/proc/${e}/ns/net`))) process.kill(Number(e), "SIGKILL");
      } catch {
        // gone
      }
    }
  }
  const links = readdirSync("/sys/class/net").filter((l) => l.startsWith(`tpdx${id}`) || l.startsWith(`tpdi${id}`));
  const cmds = [...links.map((l) => `link del ${l}`), ...names.map((n) => `netns del ${n}`)];
  if (cmds.length > 0) spawnSync("ip", ["-force", "-batch", "-"], { input: cmds.join("\n") + "\n", stdio: ["pipe", "ignore", "ignore"] });
  rmSync(root, { recursive: true, force: true });
  // Shared bridges are left to the next startSim()'s cleanup: deciding whether another sim still
  // needs them takes the machine lock, which an exit handler cannot wait for.
}

async function chmodReadable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir)) {
    const p = resolve(dir, e);
    const st = await stat(p);
    if (st.isDirectory()) await chmodReadable(p);
    else await chmod(p, st.mode & 0o111 ? 0o755 : 0o644);
  }
}
