// The job driver of one SkyPilot job (what Ray's driver does on the head node): runs setup and then run
// on every host of the cluster in parallel over real SSH, with SkyPilot's environment variables and log
// prefixes, records the job's statuses, and autodowns an idle cluster when asked to.
// Started detached by jobs.ts with the job spec (including secrets) on stdin.
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { readFaults, readState, updateState, type SimHost } from "../state.js";
import { stableHosts, teardownCluster } from "./cluster.js";
import { TERMINAL, jobLogPath, type JobSpec } from "./jobs.js";
import { readClusterMeta, readJobMeta, writeJobMeta } from "./server-db.js";
import { readStdin } from "./io.js";
import { pyRepr } from "./pyfmt.js";

const SSH_USER = "gcpuser";
const AUTODOWN_MIN_IDLE_MS = 5000;

// Python's shlex.quote.
export function shQuote(s: string): string {
  if (s === "") return "''";
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'"'"'`)}'`;
}

// skypilot-org/skypilot sky/utils/command_runner.py ssh_options_list: with gcp.ssh_proxy_command every SSH connection SkyPilot makes goes through
// it (%w is the node's index; %h and %p are left for ssh).
export function sshArgs(keyPath: string, ip: string, proxyCommand: string | null = null, nodeIndex = 0): string[] {
  return [
    "-T",
    "-F",
    "/dev/null",
    ...(proxyCommand === null ? [] : ["-o", `ProxyCommand=${proxyCommand.replace(/%w/g, String(nodeIndex))}`]),
    "-i",
    keyPath,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=15",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
    "-p",
    "22",
    `${SSH_USER}@${ip}`,
  ];
}

// What a Ray worker does with each setup/run command (sky/skylet/log_lib.py run_bash_command_with_log):
// the wrapped script goes into a temporary file `/tmp/sky_app_*` (tempfile.NamedTemporaryFile(prefix=
// 'sky_app_', delete=False)) and runs as `/bin/bash -i <file>` ("Need this `-i` option to make sure
// `source ~/.bashrc` work"). Here the script arrives on the SSH channel's stdin; the pid marker line is the
// sim's stand-in for Ray's task pid (used to kill a failed job's other ranks as a group).
const REMOTE =
  `f=$(mktemp /tmp/sky_app_XXXXXXXX) && cat > "$f" && ` +
  `exec setsid -w /bin/bash -c 'echo "__SKYPILOT_JOB_PID__ $$"; exec /bin/bash -i "$1"' bash "$f" </dev/null`;
const PID_MARK = "__SKYPILOT_JOB_PID__";
// log_lib.run_with_log's skip_lines for `bash -i` without a terminal.
const SKIP_LINES = ["bash: cannot set terminal process group", "bash: no job control in this shell"];

// sky/skylet/constants.py: DEACTIVATE_SKY_REMOTE_PYTHON_ENV (SKY_REMOTE_PYTHON_ENV = ~/skypilot-runtime).
const DEACTIVATE_SKY_REMOTE_PYTHON_ENV =
  'export PATH=$(echo $PATH | sed "s|$(echo ~/skypilot-runtime)/bin:||") && unset VIRTUAL_ENV && unset VIRTUAL_ENV_PROMPT';

/**
 * log_lib.make_task_bash_script, line for line: ~/.bashrc, conda's profile under set -a, SkyPilot's own
 * runtime env deactivated, PYTHONUNBUFFERED, `cd ~/sky_workdir` (constants.SKY_REMOTE_WORKDIR), then one
 * `export K=<shlex.quote(v)>` per env var, then the command.
 */
export function makeTaskBashScript(codegen: string, envVars: Record<string, string>): string {
  return [
    "#!/bin/bash",
    "source ~/.bashrc",
    "set -a",
    ". $(conda info --base 2> /dev/null)/etc/profile.d/conda.sh > /dev/null 2>&1 || true",
    "set +a",
    DEACTIVATE_SKY_REMOTE_PYTHON_ENV,
    "export PYTHONUNBUFFERED=1",
    "cd ~/sky_workdir",
    ...Object.entries(envVars).map(([k, v]) => `export ${k}=${shQuote(v)}`),
    codegen,
    "",
  ].join("\n");
}

interface HostRun {
  host: SimHost;
  rank: number;
  pid: number | null;
  child: ReturnType<typeof spawn> | null;
  code: number | null;
  killed: boolean;
}

async function main(): Promise<void> {
  const spec = JSON.parse(await readStdin()) as JobSpec;
  const log = jobLogPath(spec.root, spec.clusterHash, spec.jobId);
  const write = (line: string) => appendFileSync(log, line + "\n");
  const s = await readState(spec.root);
  const c = s.clusters[spec.cluster];
  if (!c) {
    await setStatus(spec, "FAILED_DRIVER");
    return;
  }
  // A task of fewer nodes than the cluster runs on the first ones (head node first); on TPU pods a
  // node is a whole slice, so all of its hosts take part.
  const slicesUsed = c.slices.slice(0, Math.max(1, Math.min(spec.numNodes, c.slices.length)));
  const used = new Set(slicesUsed.flatMap((sl) => sl.hostIds));
  const hosts = stableHosts(s, c).filter((h) => used.has(h.id));
  const ips = hosts.map((h) => h.internalIp).join("\n");
  const base: Record<string, string> = { ...spec.envs, ...spec.secrets };
  const head = hosts[0];
  if (head) await writeDriverFile(spec, head);
  const common = {
    SKYPILOT_TASK_ID: spec.taskId,
    SKYPILOT_CLUSTER_INFO: spec.clusterInfo,
    SKYPILOT_USER: spec.user,
  };

  if (spec.setup !== null) {
    await setStatus(spec, "SETTING_UP", { start: true });
    // faults.json sky.setupFail: setup exits 1 on every host.
    const failSetup = (await readFaults(spec.root)).sky?.setupFail === true;
    const userSetup = failSetup ? `echo "setup failed (simulated: faults.json sky.setupFail)" >&2\nexit 1\n${spec.setup}` : spec.setup;
    // task_codegen.RayCodeGen.add_setup: setup_cmd = 'unset CUDA_VISIBLE_DEVICES; ' + setup_cmd
    const setupCmd = `unset CUDA_VISIBLE_DEVICES; ${userSetup}`;
    const codes = await runPhase(
      spec,
      hosts,
      write,
      (rank) => ({
        ...base,
        ...common,
        SKYPILOT_SETUP_NODE_RANK: String(rank),
        SKYPILOT_SETUP_NODE_IPS: ips,
        SKYPILOT_SETUP_NUM_GPUS_PER_NODE: String(spec.numGpusSetup),
      }),
      setupCmd,
      (h, rank, pid) => (rank === 0 ? `(setup pid=${pid})` : `(setup pid=${pid}, ip=${h.internalIp})`),
    );
    if (codes.some((x) => x !== 0)) {
      write(`ERROR: Job ${spec.jobId}'s setup failed with return code list: [${codes.join(", ")}]`);
      await setStatus(spec, "FAILED_SETUP", { end: true });
      await maybeAutodown(spec);
      return;
    }
  }
  if (spec.run !== null) {
    await setStatus(spec, "RUNNING", { start: spec.setup === null });
    const codes = await runPhase(
      spec,
      hosts,
      write,
      (rank) => ({
        ...base,
        ...common,
        SKYPILOT_NODE_RANK: String(rank),
        SKYPILOT_NODE_IPS: ips,
        SKYPILOT_NUM_NODES: String(hosts.length),
        SKYPILOT_NUM_GPUS_PER_NODE: "0",
      }),
      // task_codegen.RayCodeGen._add_ray_task: script = f'{unset_ray_env_vars}; {script}' (UNSET_RAY_ENV_VARS).
      `unset RAY_RAYLET_PID; ${spec.run}`,
      (h, rank, pid) => (rank === 0 ? `(head, rank=0, pid=${pid})` : `(worker${rank}, rank=${rank}, pid=${pid}, ip=${h.internalIp})`),
    );
    if (codes.some((x) => x !== 0)) {
      let reason = "";
      if (codes.some((x) => x === 139)) reason = "(likely due to Segmentation Fault)";
      if (codes.some((x) => x === 137)) {
        const first = codes.find((x) => x !== 137);
        reason = `(A Worker failed with return code ${first}, SkyPilot cleaned up the processes on other nodes with return code 137)`;
      }
      write(`ERROR: Job ${spec.jobId} failed with return code list: [${codes.join(", ")}] ${reason}`);
      await setStatus(spec, "FAILED", { end: true });
      await maybeAutodown(spec);
      return;
    }
  } else {
    await setStatus(spec, "RUNNING", { start: spec.setup === null });
  }
  await setStatus(spec, "SUCCEEDED", { end: true });
  await maybeAutodown(spec);
}

async function runPhase(
  spec: JobSpec,
  hosts: SimHost[],
  write: (line: string) => void,
  envFor: (rank: number) => Record<string, string>,
  command: string,
  prefix: (h: SimHost, rank: number, pid: number | string) => string,
): Promise<number[]> {
  const runs: HostRun[] = hosts.map((host, rank) => ({ host, rank, pid: null, child: null, code: null, killed: false }));
  let failed = false;
  // Ray's cleanup of the other ranks (get_or_fail: ray.cancel(force=True); log_lib's
  // subprocess_utils.kill_children_processes kills the whole process tree), reported as 137. `bash -i`
  // puts each command in a process group of its own, so the whole session is killed, not one group.
  // A rank whose script has not reported its pid yet is killed as soon as it does.
  const killRemote = (r: HostRun) => {
    if (r.pid !== null) void sshOnce(spec, r.host.externalIp, r.rank, `pkill -KILL -s ${r.pid} 2>/dev/null; true`);
  };
  const killOthers = () => {
    for (const r of runs.filter((x) => x.code === null)) {
      r.killed = true;
      killRemote(r);
    }
  };
  await Promise.all(
    runs.map(
      (r) =>
        new Promise<void>((resolve) => {
          const script = makeTaskBashScript(command, envFor(r.rank));
          const child = spawn("ssh", [...sshArgs(spec.keyPath, r.host.externalIp, spec.proxyCommand ?? null, r.rank), REMOTE], {
            stdio: ["pipe", "pipe", "pipe"],
          });
          r.child = child;
          const early: string[] = [];
          const emit = (line: string) => {
            if (SKIP_LINES.some((skip) => line.includes(skip))) return;
            if (r.pid === null) {
              const m = new RegExp(`^${PID_MARK} (\\d+)$`).exec(line);
              if (m?.[1]) {
                r.pid = Number(m[1]);
                if (r.killed) killRemote(r);
                for (const l of early) write(`${prefix(r.host, r.rank, r.pid)} ${l}`);
                early.length = 0;
                return;
              }
              early.push(line);
              return;
            }
            write(`${prefix(r.host, r.rank, r.pid)} ${line}`);
          };
          for (const stream of [child.stdout, child.stderr]) {
            let buf = "";
            stream?.setEncoding("utf8");
            stream?.on("data", (d: string) => {
              buf += d;
              let i: number;
              while ((i = buf.indexOf("\n")) >= 0) {
                emit(buf.slice(0, i));
                buf = buf.slice(i + 1);
              }
            });
            stream?.on("end", () => {
              if (buf !== "") emit(buf);
              buf = "";
            });
          }
          child.stdin?.on("error", () => undefined);
          child.stdin?.end(script);
          child.on("error", () => {
            r.code = 255;
            resolve();
          });
          child.on("close", (code, signal) => {
            for (const l of early) write(`${prefix(r.host, r.rank, "?")} ${l}`);
            early.length = 0;
            r.code = r.killed ? 137 : (code ?? (signal === "SIGKILL" ? 137 : 1));
            if (r.code !== 0 && !failed) {
              // Like get_or_fail: the first failure cancels the other ranks.
              failed = true;
              killOthers();
            }
            resolve();
          });
        }),
    ),
  );
  return runs.map((r) => r.code ?? 1);
}

function sshOnce(spec: JobSpec, ip: string, nodeIndex: number, cmd: string, input?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("ssh", [...sshArgs(spec.keyPath, ip, spec.proxyCommand ?? null, nodeIndex), cmd], {
      stdio: [input === undefined ? "ignore" : "pipe", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
    child.on("error", (err) => resolve({ code: 255, stderr: String(err) }));
    child.on("close", (code) => resolve({ code: code ?? 1, stderr }));
  });
}

// The job's driver program as skypilot-org/skypilot cloud_vm_ray_backend.py _exec_code_on_head leaves it on the head node:
// ~/.sky/sky_app/sky_job_<id> (SKY_REMOTE_APP_DIR), mode 0755, kept after the job. Its codegen
// (task_codegen.RayCodeGen) spells every env var and secret of the task as a Python literal
// (`sky_env_vars_dict[{k!r}] = {v!r}`, `env_vars={setup_envs!r}`, from get_plaintext_envs_and_secrets).
export function driverProgram(spec: JobSpec): string {
  const envs: Record<string, string> = { ...spec.envs, ...spec.secrets };
  return [
    "import getpass",
    "import os",
    "import sys",
    "import ray",
    "from sky.skylet import constants",
    "from sky.skylet import job_lib",
    "from sky.utils import log_utils",
    "",
    `SKY_REMOTE_WORKDIR = ${pyRepr("~/sky_workdir")}`,
    "ray.init(address='auto', namespace='__sky__', log_to_driver=True)",
    `job_lib.set_status(${spec.jobId}, job_lib.JobStatus.PENDING)`,
    `setup_cmd = ${pyRepr(spec.setup === null ? null : `unset CUDA_VISIBLE_DEVICES; ${spec.setup}`)}`,
    `setup_envs = ${pyRepr({ ...envs, SKYPILOT_TASK_ID: spec.taskId, SKYPILOT_CLUSTER_INFO: spec.clusterInfo })}`,
    "setup_workers = [run_bash_command_with_log_and_return_pid.options(name='setup', num_cpus=0.5)" +
      ".remote(setup_cmd, os.path.expanduser(setup_log_path), env_vars=setup_envs, stream_logs=False, with_ray=True)]",
    "sky_env_vars_dict = {}",
    `sky_env_vars_dict['SKYPILOT_TASK_ID'] = ${pyRepr(spec.taskId)}`,
    `sky_env_vars_dict['SKYPILOT_CLUSTER_INFO'] = ${pyRepr(spec.clusterInfo)}`,
    ...Object.entries(envs).map(([k, v]) => `sky_env_vars_dict[${pyRepr(k)}] = ${pyRepr(v)}`),
    `script = ${pyRepr(spec.run === null ? null : `unset RAY_RAYLET_PID; ${spec.run}`)}`,
    "",
  ].join("\n");
}

async function writeDriverFile(spec: JobSpec, head: SimHost): Promise<void> {
  const path = `~/.sky/sky_app/sky_job_${spec.jobId}`;
  // SETUP_SKY_DIRS_COMMANDS makes ~/.sky/sky_app; JobsServiceImpl.QueueJob writes the file and chmods it 0755.
  const r = await sshOnce(spec, head.externalIp, 0, `mkdir -p ~/.sky/sky_app && cat > ${path} && chmod 755 ${path}`, driverProgram(spec));
  // SkyPilot fails the job when it cannot queue it on the head; the double does not go on without its file either.
  if (r.code !== 0) throw new Error(`could not write the job's driver program on the head (ssh exit ${r.code}): ${r.stderr.trim()}`);
}

async function setStatus(spec: JobSpec, status: string, t: { start?: boolean; end?: boolean } = {}): Promise<void> {
  const now = Date.now() / 1000;
  const jm = readJobMeta(spec.root, spec.clusterHash, spec.jobId);
  if (jm) {
    if (t.start && jm.startAt === null) jm.startAt = now;
    if (t.end) jm.endAt = now;
    await writeJobMeta(spec.root, spec.clusterHash, jm);
  }
  await updateState(spec.root, (s) => {
    const j = s.clusters[spec.cluster]?.jobs.find((x) => x.id === spec.jobId);
    if (j) j.status = status;
  });
}

// skylet's autostop with --down: tear the cluster down once it has been idle (no unfinished job and,
// for --wait-for jobs_and_ssh, no SSH session on the head) for the autostop minutes.
async function maybeAutodown(spec: JobSpec): Promise<void> {
  let idleSince: number | null = null;
  for (;;) {
    const meta = readClusterMeta(spec.root, spec.cluster);
    const s = await readState(spec.root);
    const c = s.clusters[spec.cluster];
    if (!meta || !c || meta.clusterHash !== spec.clusterHash || !meta.toDown || !c.autodown) return;
    const busy = c.jobs.some((j) => !TERMINAL.includes(j.status));
    if (busy) {
      // A later job's driver takes over.
      if (c.jobs.some((j) => j.id > spec.jobId)) return;
      idleSince = null;
    } else {
      let sshActive = false;
      const head = s.hosts[c.headHostId];
      if (meta.waitFor === "jobs_and_ssh" && head?.alive) sshActive = sshSessionsIn(head.netns) > 0;
      if (sshActive) idleSince = null;
      else idleSince ??= Date.now();
      // skylet checks idleness periodically (every minute on a real cluster): never at the same instant
      // the job ends, so a client tailing the job still sees it finish.
      if (idleSince !== null && Date.now() - idleSince >= Math.max(AUTODOWN_MIN_IDLE_MS, meta.autostopMinutes * 60_000)) {
        if (c.jobs.some((j) => j.id > spec.jobId)) return;
        await teardownCluster(spec.root, spec.cluster);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// SSH sessions of the user on one host: sshd's per-session processes inside the host's namespace
// (a pgrep run there would see the whole machine, since hosts share the pid namespace).
function sshSessionsIn(netns: string): number {
  const pids = spawnSync("ip", ["netns", "pids", netns], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((x) => x !== "");
  let n = 0;
  for (const pid of pids) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith(`sshd: ${SSH_USER}`)) n++;
    } catch {
      // gone
    }
  }
  return n;
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`job driver failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
