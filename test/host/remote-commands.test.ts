// The host-side shell commands, run for real: `bash -c` here with a throw-away HOME, real processes,
// process groups, signals and sockets. A TPU host runs the same bash over SSH.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { shellQuote } from "../../src/core/quote.js";
import {
  aliveCommand,
  installAndStartCommand,
  parsePortProbeLine,
  portProbeCommand,
  type RemoteFiles,
  remoteFiles,
  runScript,
  secretsEnvFile,
  startCommand,
  stopCommand,
  stopFromPidFileCommand,
  tailCommand,
  watchCommand,
  parseWatchEnd,
  writeFromStdin,
} from "../../src/core/remote.js";

const ROOT = mkdtempSync(join(tmpdir(), "tpd-remote-"));
let homes = 0;
function newHome(): string {
  const home = join(ROOT, `home-${++homes}`);
  mkdirSync(home);
  return home;
}

/** Every process group or process a test started; killed after each test whatever happened. */
const started: { pid: number; group: boolean }[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const { pid, group } of started.splice(0)) {
    try {
      process.kill(group ? -pid : pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const c of children.splice(0)) {
    try {
      if (c.pid) process.kill(-c.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command the way the SSH channel does: `bash -c` in the login user's HOME environment. */
function sh(home: string, command: string, stdin = ""): Run {
  const t = Date.now();
  const r = spawnSync("env", [`HOME=${home}`, "bash", "-c", command], { input: stdin, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t };
}

function shAsync(home: string, command: string, stdin = ""): { child: ChildProcess; done: Promise<Run> } {
  const t = Date.now();
  // Its own process group, so that a test (and the cleanup) can end the command with all it started.
  const child = spawn("env", [`HOME=${home}`, "bash", "-c", command], { stdio: ["pipe", "pipe", "pipe"], detached: true });
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin?.end(stdin);
  const done = new Promise<Run>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - t })));
  return { child, done };
}

interface Stat {
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  startTime: string;
}

/** /proc/<pid>/stat, split after the command name (which may contain spaces and parentheses). */
function procStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: f[0] ?? "", ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), startTime: f[19] ?? "" };
}

const running = (pid: number) => {
  const s = procStat(pid);
  return s !== undefined && s.state !== "Z";
};

/** Live (non-zombie) processes of a process group. */
function groupMembers(pgid: number): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => {
      const s = procStat(pid);
      return s !== undefined && s.pgrp === pgid && s.state !== "Z";
    });
}

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Writes run.sh for argv and starts it with startCommand; returns what the start printed. */
function startGroup(home: string, files: RemoteFiles, argv: string[], env: Record<string, string> = {}): { pid: number; st: string } {
  mkdirSync(join(home, files.dir), { recursive: true });
  writeFileSync(join(home, files.run), runScript({ files, argv, env }));
  const r = sh(home, startCommand(files));
  const m = /^(\d+) (\d+)\n$/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`start failed: ${JSON.stringify(r)}`);
  const pid = Number(m[1]);
  started.push({ pid, group: true });
  return { pid, st: m[2] ?? "" };
}

/** Kills a group and waits until its leader is reaped (an init may reap orphans late). */
async function killGroupAndReap(pid: number): Promise<void> {
  process.kill(-pid, "SIGKILL");
  await waitFor(`pid ${pid} to be reaped`, () => procStat(pid) === undefined);
}

/** A process whose parent never reaps it: killing it leaves a zombie for as long as the test needs. */
async function unreapedChild(home: string): Promise<{ pid: number; parent: number }> {
  const { child } = shAsync(home, "sleep 300 & echo $!; exec sleep 301");
  const line = await new Promise<string>((resolve) => child.stdout?.once("data", (d: string) => resolve(d)));
  const pid = Number(line.trim());
  started.push({ pid, group: false });
  return { pid, parent: child.pid ?? 0 };
}

// Values a shell must not touch: quotes, $(), backticks, $VAR, backslashes, newlines, globs, UTF-8.
const NASTY = `it's "quoted" $(touch PWNED) \`touch PWNED2\` $HOME \\ back\\nslash\nsecond line\ttab; * ? ~ [a] {b,c} ü ✓ ''""`;
const TRAILING_NEWLINE = "ends with a newline\n";

// A stand-in for the venv's python and the sglang-jax module: records what the server process got.
// Like sglang-jax, it logs its whole argv (the API key included), here split across two writes; a child it
// starts logs HF_TOKEN. The log must carry neither.
const FAKE_SERVER = `import json, os, subprocess, sys, time
with open('/proc/self/cmdline', 'rb') as f:
    cmdline = f.read().decode().split('\\0')
with open('/proc/self/environ', 'rb') as f:
    environ = f.read().decode(errors='replace')
line = 'server_args=' + ' '.join(sys.argv[1:])
sys.stdout.write(line[:len(line) // 2]); sys.stdout.flush(); time.sleep(0.05)
sys.stdout.write(line[len(line) // 2:] + '\\n'); sys.stdout.flush()
subprocess.run([sys.executable, '-c', 'import os; print("child sees", os.environ.get("HF_TOKEN"), flush=True)'])
print('logged', flush=True)
seen = {"argv": sys.argv[1:], "cmdline": cmdline, "env": dict(os.environ), "environ": environ, "pid": os.getpid(), "cwd": os.getcwd()}
out = os.path.join(os.environ["HOME"], "seen.json")
with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(out + ".tmp", out)
time.sleep(300)
`;

function installFakeServer(home: string): string {
  const python = join(home, VENV_PYTHON.slice(2));
  mkdirSync(join(python, ".."), { recursive: true });
  writeFileSync(python, '#!/bin/sh\nexec /usr/bin/python3 "$@"\n');
  chmodSync(python, 0o755);
  const lib = join(home, "pylib");
  mkdirSync(join(lib, "sgl_jax"), { recursive: true });
  writeFileSync(join(lib, "sgl_jax", "__init__.py"), "");
  writeFileSync(join(lib, "sgl_jax", "launch_server.py"), FAKE_SERVER);
  return lib;
}

interface Seen {
  argv: string[];
  cmdline: string[];
  /** /proc/self/environ: the environment the process was started with. */
  environ: string;
  env: Record<string, string>;
  pid: number;
  cwd: string;
}

async function seenBy(home: string): Promise<Seen> {
  const path = join(home, "seen.json");
  await waitFor("the fake server to report", () => existsSync(path));
  return JSON.parse(readFileSync(path, "utf8")) as Seen;
}

// Home-relative as sglang.dir's default: run.sh must expand the ~ itself (a quoted ~ stays literal).
const VENV_PYTHON = "~/sglang-jax/.venv/bin/python";
const SERVER_ARGV = [VENV_PYTHON, "-u", "-m", "sgl_jax.launch_server", "--model-path", "meta-llama/Llama-3.1-8B", "--node-rank", "2"];

describe("runScript + startCommand", () => {
  it("starts the server in its own session (pid = pgid = sid), records 'pid starttime', passes secrets and env byte for byte", async () => {
    const home = newHome();
    const files = remoteFiles("sgl");
    const lib = installFakeServer(home);
    const secrets = new Map([
      ["HF_TOKEN", NASTY],
      ["WANDB_API_KEY", TRAILING_NEWLINE],
    ]);
    expect(sh(home, writeFromStdin(files.secrets), secretsEnvFile(secrets)).code).toBe(0);
    const env = { PYTHONPATH: lib, JAX_COMPILATION_CACHE_DIR: "/mnt/cache/jit", ODD: NASTY };
    writeFileSync(join(home, files.run), runScript({ files, argv: SERVER_ARGV, env }));

    const r = sh(home, startCommand(files));
    const m = /^(\d+) (\d+)\n$/.exec(r.stdout);
    expect(m, JSON.stringify(r)).not.toBeNull();
    const pid = Number(m?.[1]);
    started.push({ pid, group: true });
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(5_000);

    const seen = await seenBy(home);
    const stat = procStat(pid);
    expect(seen.pid).toBe(pid); // run.sh exec'd the server: the recorded pid is the server itself
    expect(stat?.pgrp).toBe(pid);
    expect(stat?.session).toBe(pid);
    expect(m?.[2]).toBe(stat?.startTime);
    expect(readFileSync(join(home, files.pid), "utf8")).toBe(`${pid} ${stat?.startTime}\n`);
    expect(seen.cwd).toBe(home);
    expect(seen.argv).toEqual(SERVER_ARGV.slice(4));
    expect(seen.env.HF_TOKEN).toBe(NASTY);
    expect(seen.env.WANDB_API_KEY).toBe(TRAILING_NEWLINE);
    expect(seen.env.ODD).toBe(NASTY);
    expect(seen.env.JAX_COMPILATION_CACHE_DIR).toBe("/mnt/cache/jit");
    expect(existsSync(join(home, "PWNED"))).toBe(false);
    expect(existsSync(join(home, "PWNED2"))).toBe(false);
  });

  it("with an apiKeySecret, the key reaches sglang-jax's argv in-process, never any /proc/*/cmdline or environ, and the log has [REDACTED] for every secret", async () => {
    const home = newHome();
    const files = remoteFiles("sgl");
    const lib = installFakeServer(home);
    // Starts with "-": as one word (--api-key=KEY) argparse cannot take it for an option.
    const key = `-sk-tpd-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    const secrets = new Map([
      ["HF_TOKEN", "hf_abc_0123456789"],
      ["SGLANG_API_KEY", key],
    ]);
    expect(sh(home, writeFromStdin(files.secrets), secretsEnvFile(secrets, "SGLANG_API_KEY")).code).toBe(0);
    const script = runScript({
      files,
      argv: SERVER_ARGV,
      env: { PYTHONPATH: lib },
      apiKeySecret: "SGLANG_API_KEY",
      secretNames: [...secrets.keys()],
    });
    expect(script).not.toContain(key);
    writeFileSync(join(home, files.run), script);

    // Watch every process's command line from before the start until the server has reported.
    const leaks: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const d of readdirSync("/proc")) {
          if (!/^\d+$/.test(d)) continue;
          try {
            const cmdline = readFileSync(`/proc/${d}/cmdline`, "utf8");
            if (cmdline.includes(key)) leaks.push(`${d}: ${cmdline.replaceAll("\0", " ")}`);
          } catch {
            // exited meanwhile
          }
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const start = shAsync(home, startCommand(files));
    const r = await start.done;
    const pid = Number(r.stdout.split(" ")[0]);
    started.push({ pid, group: true });
    const seen = await seenBy(home);
    await new Promise((resolve) => setTimeout(resolve, 200));
    watching = false;
    await watcher;

    expect(seen.argv).toEqual([`--api-key=${key}`, ...SERVER_ARGV.slice(4)]);
    expect(seen.cmdline.join(" ")).not.toContain(key);
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).not.toContain(key);
    expect(leaks).toEqual([]);
    // Not in the environment either, not even the one the process started with (#10.9).
    expect(seen.environ).not.toContain(key);
    expect(seen.env.SGLANG_API_KEY).toBeUndefined();
    expect(seen.env.HF_TOKEN).toBe("hf_abc_0123456789");
    // The server logged its argv (the key) and a child logged HF_TOKEN: the log has [REDACTED] instead.
    const log = join(home, files.log);
    await waitFor("the log to be written", () => readFileSync(log, "utf8").includes("logged"));
    const text = readFileSync(log, "utf8");
    expect(text).not.toContain(key);
    expect(text).not.toContain("hf_abc_0123456789");
    expect(text).toContain("server_args=--api-key=[REDACTED] --model-path meta-llama/Llama-3.1-8B --node-rank 2");
    expect(text).toContain("child sees [REDACTED]");
    expect(statSync(log).mode & 0o777).toBe(0o600);
  });

  it("without an apiKeySecret, the server gets its argv as given (through the boot), in the same process", async () => {
    const home = newHome();
    const files = remoteFiles("plain");
    const lib = installFakeServer(home);
    const { pid } = startGroup(home, files, SERVER_ARGV, { PYTHONPATH: lib });
    const seen = await seenBy(home);
    expect(seen.pid).toBe(pid);
    expect(seen.argv).toEqual(SERVER_ARGV.slice(4));
    expect(seen.cmdline.slice(1, 3)).toEqual(["-u", "-c"]);
    expect(seen.cmdline.slice(4, 6)).toEqual(["-", ""]);
  });

  it("works without a secrets file", async () => {
    const home = newHome();
    const files = remoteFiles("nosecrets");
    const { pid } = startGroup(home, files, ["bash", "-c", 'printf %s "${HF_TOKEN-unset}" > "$HOME/got"; exec sleep 300']);
    await waitFor("the script to write", () => existsSync(join(home, "got")));
    expect(readFileSync(join(home, "got"), "utf8")).toBe("unset");
    expect(running(pid)).toBe(true);
  });
});

/** An interpreter and a setup marker that exist in `home`, as setup leaves them. */
function prerequisitesIn(home: string): { python: string; marker: string } {
  mkdirSync(join(home, "venv dir"), { recursive: true });
  writeFileSync(join(home, "venv dir", "python"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(join(home, "venv dir", "marker"), "");
  return { python: "~/venv dir/python", marker: "~/venv dir/marker" };
}

describe("installAndStartCommand", () => {
  it("starts nothing and names the path when the interpreter or the setup marker is missing", () => {
    const home = newHome();
    const files = remoteFiles("llama-serve");
    const script = runScript({ files, argv: ["bash", "-c", "touch $HOME/STARTED"], env: {} });
    const noPython = sh(home, installAndStartCommand(files, script, { python: "~/nope/python", marker: "~/m" }), "export K=v\n");
    expect(noPython.code).toBe(3);
    expect(noPython.stdout).toBe(`tpd-missing python ${home}/nope/python\n`);
    const pre = prerequisitesIn(home);
    const noMarker = sh(home, installAndStartCommand(files, script, { ...pre, marker: "/abs/marker" }), "export K=v\n");
    expect(noMarker.code).toBe(3);
    expect(noMarker.stdout).toBe("tpd-missing marker /abs/marker\n");
    expect(existsSync(join(home, "STARTED"))).toBe(false);
    expect(existsSync(join(home, files.secrets))).toBe(false);
  });

  it("writes the secrets (0600, from stdin) and run.sh in a 0700 directory, then starts, in one command", async () => {
    const home = newHome();
    const files = remoteFiles("llama-serve");
    const secrets = new Map([["HF_TOKEN", NASTY]]);
    const script = runScript({ files, argv: ["bash", "-c", 'printf %s "$HF_TOKEN" > "$HOME/got"; exec sleep 300'], env: {} });
    const command = installAndStartCommand(files, script, prerequisitesIn(home));
    expect(command).not.toContain("touch PWNED");

    const r = sh(home, command, secretsEnvFile(secrets));
    const m = /^(\d+) (\d+)\n$/.exec(r.stdout);
    expect(m, JSON.stringify(r)).not.toBeNull();
    const pid = Number(m?.[1]);
    started.push({ pid, group: true });
    await waitFor("the server to read its secret", () => existsSync(join(home, "got")));

    expect(readFileSync(join(home, "got"), "utf8")).toBe(NASTY);
    expect(statSync(join(home, files.secrets)).mode & 0o777).toBe(0o600);
    expect(statSync(join(home, files.dir)).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(home, files.secrets), "utf8")).toBe(secretsEnvFile(secrets));
    expect(readFileSync(join(home, files.run), "utf8")).toBe(script);
    expect(readdirSync(join(home, files.dir)).sort()).toEqual(["run.sh", "secrets.env", "server.log", "server.pid"]);
    expect(procStat(pid)?.pgrp).toBe(pid);
    expect(existsSync(join(home, "PWNED"))).toBe(false);
  });

  it("a second install replaces the files of the first", () => {
    const home = newHome();
    const files = remoteFiles("again");
    const script = (n: number) => runScript({ files, argv: ["sleep", String(300 + n)], env: {} });
    for (const n of [1, 2]) {
      const r = sh(home, installAndStartCommand(files, script(n), prerequisitesIn(home)), secretsEnvFile(new Map([["K", `v${n}`]])));
      started.push({ pid: Number(r.stdout.split(" ")[0]), group: true });
      expect(r.code).toBe(0);
    }
    expect(readFileSync(join(home, files.run), "utf8")).toBe(script(2));
    expect(readFileSync(join(home, files.secrets), "utf8")).toBe("export K=v2\n");
    expect(readdirSync(join(home, files.dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});

describe("stopCommand", () => {
  it("TERMs every process of the group and reports stopped", async () => {
    const home = newHome();
    const files = remoteFiles("s1");
    const { pid, st } = startGroup(home, files, ["bash", "-c", "sleep 300 & sleep 301 & wait"]);
    await waitFor("three processes in the group", () => groupMembers(pid).length === 3);
    const r = sh(home, stopCommand(pid, st, 8));
    expect(r.stdout).toBe("stopped\n");
    expect(groupMembers(pid)).toEqual([]);
  });

  it("KILLs a member that ignores TERM once the grace period is over", async () => {
    const home = newHome();
    const files = remoteFiles("s2");
    const { pid, st } = startGroup(home, files, ["bash", "-c", "(trap '' TERM; exec sleep 300) & wait"]);
    await waitFor("two processes in the group", () => groupMembers(pid).length === 2);
    const r = sh(home, stopCommand(pid, st, 1));
    expect(r.stdout).toBe("killed\n");
    expect(r.ms).toBeGreaterThanOrEqual(1_000);
    expect(groupMembers(pid)).toEqual([]);
  });

  it("reports gone for a group that no longer exists", async () => {
    const home = newHome();
    const { pid, st } = startGroup(home, remoteFiles("s3"), ["sleep", "300"]);
    await killGroupAndReap(pid);
    expect(sh(home, stopCommand(pid, st, 1)).stdout).toBe("gone\n");
    expect(sh(home, stopCommand(pid, undefined, 1)).stdout).toBe("gone\n");
  });

  it("reports reused, and signals nothing, when the pid now belongs to a process started at another time", () => {
    const home = newHome();
    const { pid, st } = startGroup(home, remoteFiles("s4"), ["sleep", "300"]);
    const r = sh(home, stopCommand(pid, String(Number(st) - 1), 1));
    expect(r.stdout).toBe("reused\n");
    expect(running(pid)).toBe(true);
  });
});

describe("start time of a server whose process name has spaces and parentheses", () => {
  it("is read after the (comm) field, so stop still recognises the process as ours", async () => {
    const home = newHome();
    // comm comes from the executable's name: `x) y z` would shift every field after it for a naive `cut -f22`.
    const dir = mkdtempSync(join(tmpdir(), "tpd-comm-"));
    const odd = join(dir, "x) y z");
    spawnSync("ln", ["-s", "/bin/sleep", odd]);
    const { pid, st } = startGroup(home, remoteFiles("s5"), [odd, "300"]);
    await waitFor("the oddly named process", () => readFileSync(`/proc/${pid}/stat`, "utf8").includes("(x) y z)"));
    const r = sh(home, stopCommand(pid, st, 2));
    expect(r.stdout).toBe("stopped\n");
    expect(running(pid)).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("stopFromPidFileCommand", () => {
  it("stops the group server.pid names", async () => {
    const home = newHome();
    const files = remoteFiles("p1");
    const { pid } = startGroup(home, files, ["bash", "-c", "sleep 300 & wait"]);
    await waitFor("two processes in the group", () => groupMembers(pid).length === 2);
    expect(sh(home, stopFromPidFileCommand(files, 8)).stdout).toBe("stopped\n");
    expect(groupMembers(pid)).toEqual([]);
  });

  it("KILLs a member that ignores TERM", async () => {
    const home = newHome();
    const files = remoteFiles("p2");
    const { pid } = startGroup(home, files, ["bash", "-c", "(trap '' TERM; exec sleep 300) & wait"]);
    await waitFor("two processes in the group", () => groupMembers(pid).length === 2);
    expect(sh(home, stopFromPidFileCommand(files, 1)).stdout).toBe("killed\n");
    expect(groupMembers(pid)).toEqual([]);
  });

  it("reports none without a pid file, gone for a dead group, reused for another start time", async () => {
    const home = newHome();
    const files = remoteFiles("p3");
    expect(sh(home, stopFromPidFileCommand(files, 1)).stdout).toBe("none\n");

    const dead = startGroup(home, files, ["sleep", "300"]);
    await killGroupAndReap(dead.pid);
    expect(sh(home, stopFromPidFileCommand(files, 1)).stdout).toBe("gone\n");

    const live = startGroup(home, files, ["sleep", "300"]);
    writeFileSync(join(home, files.pid), `${live.pid} ${Number(live.st) - 1}\n`);
    expect(sh(home, stopFromPidFileCommand(files, 1)).stdout).toBe("reused\n");
    expect(running(live.pid)).toBe(true);
  });
});

describe("watchCommand and aliveCommand", () => {
  it("no-scheduler for a running process without one; dead for a zombie and for a pid that is gone", async () => {
    const home = newHome();
    const { pid } = await unreapedChild(home);
    expect(sh(home, aliveCommand(pid)).stdout).toBe("no-scheduler\n");
    process.kill(pid, "SIGKILL");
    await waitFor("the zombie", () => procStat(pid)?.state === "Z");
    expect(spawnSync("kill", ["-0", String(pid)]).status).toBe(0); // kill -0 alone would call it alive
    expect(sh(home, aliveCommand(pid)).stdout).toBe("dead\n");
    expect(sh(home, aliveCommand(2 ** 22 + 1)).stdout).toBe("dead\n");
  });

  it("alive while a process of the group is titled sglang::scheduler…; no-scheduler once it died and the main process stays", async () => {
    const home = newHome();
    const files = remoteFiles("sched");
    // The main process starts a child titled as sglang-jax titles its scheduler, then waits (as uvicorn would).
    const { pid } = startGroup(home, files, [
      "bash",
      "-c",
      '(exec -a sglang::scheduler_NP0 sleep 300) & echo $! > "$HOME/sched.pid"; sleep 300',
    ]);
    await waitFor(
      "the scheduler child",
      () => existsSync(join(home, "sched.pid")) && readFileSync(join(home, "sched.pid"), "utf8").trim() !== "",
    );
    await waitFor("its title", () => sh(home, aliveCommand(pid)).stdout === "alive\n");
    const child = Number(readFileSync(join(home, "sched.pid"), "utf8").trim());
    process.kill(child, "SIGKILL");
    await waitFor("the scheduler gone", () => sh(home, aliveCommand(pid)).stdout === "no-scheduler\n");
    // A titled process of another group does not count.
    await killGroupAndReap(pid);
    expect(sh(home, aliveCommand(pid)).stdout).toBe("dead\n");
  });

  it("watch ends with exited when the process dies, even while it is an unreaped zombie", async () => {
    const home = newHome();
    const { pid } = await unreapedChild(home);
    const watch = shAsync(home, watchCommand(pid));
    await new Promise((r) => setTimeout(r, 600));
    expect(watch.child.exitCode).toBeNull();
    process.kill(pid, "SIGKILL");
    const t = Date.now();
    const r = await watch.done;
    expect(Date.now() - t).toBeLessThan(2_000);
    expect(procStat(pid)?.state).toBe("Z");
    expect(r.stdout).toMatch(/^(\.\n)+exited\n$/);
  });

  it("watch ends with scheduler-exited when the titled child, once seen, dies while the main process stays", async () => {
    const home = newHome();
    const files = remoteFiles("wsched");
    const { pid } = startGroup(home, files, [
      "bash",
      "-c",
      '(exec -a sglang::scheduler_NP0 sleep 300) & echo $! > "$HOME/sched.pid"; sleep 300',
    ]);
    await waitFor(
      "the scheduler child",
      () => existsSync(join(home, "sched.pid")) && readFileSync(join(home, "sched.pid"), "utf8").trim() !== "",
    );
    await waitFor("its title", () => sh(home, aliveCommand(pid)).stdout === "alive\n");
    const watch = shAsync(home, watchCommand(pid));
    await new Promise((r) => setTimeout(r, 1000)); // seen at the watch's first look
    expect(watch.child.exitCode).toBeNull();
    process.kill(Number(readFileSync(join(home, "sched.pid"), "utf8").trim()), "SIGKILL");
    const t = Date.now();
    const r = await watch.done;
    expect(Date.now() - t).toBeLessThan(6_000); // the next look, at most 4 s on
    expect(parseWatchEnd(r.stdout)).toBe("scheduler-exited");
    expect(running(pid)).toBe(true);
    await killGroupAndReap(pid);
  });

  it("watch of a process that never had a scheduler ends only when the process does", async () => {
    const home = newHome();
    const { pid } = await unreapedChild(home);
    const watch = shAsync(home, watchCommand(pid));
    await new Promise((r) => setTimeout(r, 1500));
    expect(watch.child.exitCode).toBeNull();
    process.kill(pid, "SIGKILL");
    expect(parseWatchEnd((await watch.done).stdout)).toBe("exited");
  });

  it("watch ends when its stdout is closed (the SSH channel went away)", async () => {
    const home = newHome();
    const { pid } = await unreapedChild(home);
    const watch = shAsync(home, watchCommand(pid));
    await new Promise<void>((resolve) => watch.child.stdout?.once("data", () => resolve()));
    watch.child.stdout?.destroy();
    const t = Date.now();
    await watch.done;
    expect(Date.now() - t).toBeLessThan(2_000);
    expect(running(pid)).toBe(true);
  });
});

describe("tailCommand", () => {
  it("prints the last lines, nothing (exit 0) without a log, and follows appended lines", async () => {
    const home = newHome();
    const files = remoteFiles("t");
    expect(sh(home, tailCommand(files, 5, false))).toMatchObject({ code: 0, stdout: "" });
    mkdirSync(join(home, files.dir), { recursive: true });
    writeFileSync(join(home, files.log), "one\ntwo\nthree\nfour\n");
    expect(sh(home, tailCommand(files, 2, false)).stdout).toBe("three\nfour\n");
    expect(sh(home, tailCommand(files, -3, false)).stdout).toBe("");
    const follow = shAsync(home, tailCommand(files, 1, true));
    let out = "";
    follow.child.stdout?.on("data", (d: string) => (out += d));
    await waitFor("the last line", () => out === "four\n");
    writeFileSync(join(home, files.log), "five\n", { flag: "a" });
    await waitFor("the appended line", () => out === "four\nfive\n");
    process.kill(-(follow.child.pid ?? 0), "SIGTERM");
    await follow.done;
  });
});

describe("portProbeCommand: one program per host listens, then connects to every target at once", () => {
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  async function listeningServer(): Promise<number> {
    const s = createServer((c) => c.destroy());
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    const a = s.address();
    if (!a || typeof a === "string") throw new Error("no port");
    return a.port;
  }

  /** A port nothing listens on (bound and released just now). */
  async function freePort(): Promise<number> {
    const port = await listeningServer();
    const s = servers.pop();
    await new Promise((r) => s?.close(r));
    return port;
  }

  /** The probe with its stdin kept open, as the SSH channel keeps it: the test says `go` and ends it. */
  function probe(ports: number[], targets: string[], timeout = 2, windowSeconds = 30) {
    const t = Date.now();
    const child = spawn("bash", ["-c", portProbeCommand(ports, targets, timeout, windowSeconds)], {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    children.push(child);
    let stdout = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    const done = new Promise<Run>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr: "", ms: Date.now() - t })));
    return { child, done, out: () => stdout };
  }

  function resultOf(stdout: string): Record<string, string> {
    const line = stdout.split("\n").find((l) => l.startsWith("result "));
    const parsed = line === undefined ? undefined : parsePortProbeLine(line);
    if (parsed?.kind !== "result") throw new Error(`no result in ${JSON.stringify(stdout)}`);
    return parsed.answer;
  }

  it("listens before go, then reports ok and refused per target, and exits as soon as stdin ends", async () => {
    const mine = await freePort();
    const open = await listeningServer();
    const closed = await freePort();
    const targets = [`127.0.0.1:${mine}`, `127.0.0.1:${open}`, `127.0.0.1:${closed}`];
    const p = probe([mine], targets);
    await waitFor("listening", () => p.out() === "listening\n");
    // It accepts peers' connections before it was told to connect itself.
    expect(
      sh(ROOT, `python3 -c "import socket; socket.create_connection(('127.0.0.1',${mine}), timeout=2).close(); print('in')"`).stdout,
    ).toBe("in\n");
    p.child.stdin?.write("go\n");
    await waitFor("the result", () => p.out().includes("result "));
    expect(resultOf(p.out())).toEqual({ [targets[0] ?? ""]: "ok", [targets[1] ?? ""]: "ok", [targets[2] ?? ""]: "Connection refused" });
    await new Promise((r) => setTimeout(r, 300));
    expect(p.child.exitCode).toBeNull(); // still listening for the other hosts
    p.child.stdin?.end();
    const r = await p.done;
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(10_000);
  });

  it("reports bind-failed for a port in use, and exits 3", async () => {
    const busy = await listeningServer();
    const r = await probe([await freePort(), busy], []).done;
    expect(r.code).toBe(3);
    expect(r.stdout).toBe(`bind-failed ${busy} Address already in use\n`);
  });

  it("reports timed out for a port whose SYNs are dropped, all targets tried at once", async () => {
    // A listener with a full accept queue drops new SYNs, as a firewall DROP rule would.
    const { child, done } = shAsync(
      ROOT,
      `exec python3 -c ${shellQuote(
        "import socket,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(0)\nc=socket.create_connection(s.getsockname())\nprint(s.getsockname()[1], flush=True); time.sleep(60)",
      )}`,
    );
    const port = Number(await new Promise<string>((resolve) => child.stdout?.once("data", (d: string) => resolve(d))));
    // Three dropped targets cost one timeout, not three.
    const targets = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map((a) => `${a}:${port}`);
    const p = probe([await freePort()], targets, 1);
    await waitFor("listening", () => p.out() === "listening\n");
    const t = Date.now();
    p.child.stdin?.write("go\n");
    await waitFor("the result", () => p.out().includes("result "));
    expect(Date.now() - t).toBeLessThan(2_500);
    expect(resultOf(p.out())[targets[0] ?? ""]).toBe("timed out");
    p.child.stdin?.end();
    await p.done;
    child.kill("SIGKILL");
    await done;
  });

  it("gives up at its deadline when never told go", async () => {
    const r = await probe([await freePort()], [], 1, 1).done;
    expect(r).toMatchObject({ code: 0, stdout: "listening\n" });
    expect(r.ms).toBeLessThan(5_000);
  });

  it("takes only IPv4 ADDRESS:PORT targets into its command line", () => {
    expect(() => portProbeCommand([8471], ["10.0.0.2:8471; touch /tmp/x"], 3, 10)).toThrow(/not an IPv4 address and port/);
    expect(() => portProbeCommand([8471], ["host.example:8471"], 3, 10)).toThrow(/not an IPv4 address and port/);
  });
});
