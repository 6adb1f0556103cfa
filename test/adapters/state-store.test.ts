import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LockInfo, StateStore, writeFileAtomic } from "../../src/adapters/state-store.js";
import { resolveConfig } from "../../src/core/config.js";
import { specOf } from "../../src/core/config.js";
import { type DeploymentState, newState, type Phase } from "../../src/core/state.js";
import { LockedError, OperationError } from "../../src/errors.js";

const ROOT = join(import.meta.dirname, "..", "..");
const DIST_STORE = join(ROOT, "dist", "src", "adapters", "state-store.js");
const SOURCES = ["src/adapters/state-store.ts", "src/core/lock.ts", "src/core/paths.ts", "src/errors.ts"].map((p) => join(ROOT, p));

const tmp = mkdtempSync(join(tmpdir(), "tpd-state-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let homes = 0;
const newHome = () => join(tmp, `home-${++homes}`);
const storeIn = (home: string, now?: () => Date) => new StateStore({ TPU_DEPLOY_HOME: home }, now ? { now } : {});
/** What every lock in these tests may hold it for, unless a test says otherwise. */
const HOLD = { maxHoldMs: 60_000 };

function state(name: string, phase: Phase = "serving"): DeploymentState {
  const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name, tpu: { nodes: 4 } } }], {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return withPhase(newState(r.config, specOf(r.config)), phase);
}

function withPhase(s: DeploymentState, phase: Phase): DeploymentState {
  return { ...s, replicas: s.replicas.map((r) => ({ ...r, phase })) };
}

const phaseOf = (s: DeploymentState | undefined) => s?.replicas[0]?.phase;

const mode = (path: string) => statSync(path).mode & 0o777;

/** A pid that certainly belonged to a process that has exited (spawnSync reaps it). */
function deadPid(): number {
  const r = spawnSync("true");
  if (!r.pid) throw new Error("no pid");
  return r.pid;
}

/** A lock as the previous version wrote it: no boot id, no process start time, no deadline. */
function lockInfo(pid: number, host = hostname(), command = "up"): LockInfo {
  return { pid, host, command, startedAt: "2026-01-01T12:00:00.000Z" };
}

const BOOT_ID = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();

/** Field 22 of /proc/PID/stat (clock ticks after boot), read after the last ')' since comm may hold spaces and ')'. */
function startTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
}

/** A lock as this version writes it, for a holder that is `pid` as it runs now, unless `over` says otherwise. */
function fullLockInfo(pid: number, over: Partial<LockInfo> = {}): LockInfo {
  return {
    ...lockInfo(pid, hostname(), "tpu-deploy relaunch"),
    procStartTicks: startTicks(pid),
    bootId: BOOT_ID,
    deadline: "2026-01-01T13:00:00.000Z",
    ...over,
  };
}

/** A live process for a test to name as a lock's holder, once it runs `program` (comm is set at exec). */
async function liveHolder(program = "sleep"): Promise<ChildProcess & { pid: number }> {
  const child = spawn(program, ["60"], { stdio: "ignore" });
  const pid = child.pid;
  if (!pid) throw new Error(`could not start ${program}`);
  const comm = `(${program.slice(program.lastIndexOf("/") + 1).slice(0, 15)})`;
  for (let i = 0; i < 500 && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(comm); i++) await new Promise((r) => setTimeout(r, 10));
  return Object.assign(child, { pid });
}

function lockedError(fn: () => unknown): LockedError {
  const err = operationError(fn);
  expect(err.code).toBe("locked");
  return err as LockedError;
}

function writeLock(store: StateStore, name: string, info: LockInfo | string): string {
  mkdirSync(store.dir(name), { recursive: true });
  const path = join(store.dir(name), "lock");
  writeFileSync(path, typeof info === "string" ? info : JSON.stringify(info));
  return path;
}

function operationError(fn: () => unknown): OperationError {
  try {
    fn();
  } catch (err) {
    if (err instanceof OperationError) return err;
    throw err;
  }
  throw new Error("expected an OperationError");
}

describe("writeFileAtomic", () => {
  it("creates the directory 0700 and the file 0600, and leaves no temp file", () => {
    const dir = join(newHome(), "a", "b");
    const path = join(dir, "state.json");
    writeFileAtomic(path, '{"v":1}\n');
    expect(readFileSync(path, "utf8")).toBe('{"v":1}\n');
    expect(mode(path)).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });

  it("replaces a 0644 file with a 0600 one, whole", () => {
    const dir = newHome();
    mkdirSync(dir, { recursive: true });
    const path = join(dir, "state.json");
    writeFileSync(path, "old content that is longer than the new one\n");
    chmodSync(path, 0o644);
    writeFileAtomic(path, "new\n");
    expect(readFileSync(path, "utf8")).toBe("new\n");
    expect(mode(path)).toBe(0o600);
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });

  it("writes the mode it is given", () => {
    const path = join(newHome(), "sky.yaml");
    writeFileAtomic(path, "name: x\n", 0o640);
    expect(mode(path)).toBe(0o640);
  });
});

describe("StateStore read/write/list/remove", () => {
  it("round-trips a state, stamps updatedAt, and keeps the file 0600", () => {
    const home = newHome();
    const store = storeIn(home);
    const s = state("llama-serve");
    store.write(s);
    const path = join(home, "deployments", "llama-serve", "state.json");
    expect(store.path("llama-serve")).toBe(path);
    expect(mode(path)).toBe(0o600);
    const back = store.read("llama-serve");
    expect(back).toEqual({ ...s, updatedAt: expect.any(String) });
    expect(Number.isNaN(Date.parse(back?.updatedAt ?? ""))).toBe(false);
  });

  it("reads undefined for a deployment it never wrote", () => {
    expect(storeIn(newHome()).read("nope")).toBeUndefined();
  });

  it("refuses a state file that is not JSON, with a hint", () => {
    const home = newHome();
    const store = storeIn(home);
    mkdirSync(store.dir("broken"), { recursive: true });
    writeFileSync(store.path("broken"), '{"version": 1, "name": "bro');
    const err = operationError(() => store.read("broken"));
    expect(err.code).toBe("state_corrupt");
    expect(err.message).toMatch(new RegExp(`^state file corrupt: ${store.path("broken").replace(/[.]/g, "\\.")} \\(not JSON: `));
    expect(err.hint).toContain("move it away");
    expect(err.hint).toContain("tpu-deploy gc");
  });

  it("lists deployments with a state file, sorted; a directory with only a lock is not one", () => {
    const home = newHome();
    const store = storeIn(home);
    for (const n of ["zeta", "alpha", "mid"]) store.write(state(n));
    const lock = store.lock("locked-only", "up", HOLD);
    writeFileSync(join(home, "deployments", "not-a-dir"), "x");
    expect(store.list()).toEqual(["alpha", "mid", "zeta"]);
    lock.release();
  });

  it("lists nothing when the home does not exist", () => {
    expect(storeIn(join(newHome(), "missing")).list()).toEqual([]);
  });

  it("removes a deployment's directory", () => {
    const store = storeIn(newHome());
    store.write(state("gone"));
    store.write(state("kept"));
    store.remove("gone");
    expect(existsSync(store.dir("gone"))).toBe(false);
    expect(store.list()).toEqual(["kept"]);
    store.remove("never-existed");
  });
});

describe("the installation id (owner label value)", () => {
  it("is derived the same before and after it is stored, stored 0600 only when asked, and read back after", () => {
    const home = newHome();
    const store = storeIn(home);
    const preview = store.installationId();
    expect(preview).toMatch(/^[a-f0-9]{16}$/);
    expect(existsSync(home)).toBe(false); // a dry run touches nothing
    expect(store.installationId({ create: true })).toBe(preview);
    const file = join(home, "installation-id");
    expect(readFileSync(file, "utf8")).toBe(`${preview}\n`);
    expect(mode(file)).toBe(0o600);
    // The stored id wins over the derivation (a host renamed keeps its ownership).
    writeFileSync(file, "00000000000000aa\n");
    expect(storeIn(home).installationId()).toBe("00000000000000aa");
    expect(storeIn(newHome()).installationId()).not.toBe(preview); // another directory, another installation
  });

  it("a damaged id file is state_corrupt, never silently replaced", () => {
    const home = newHome();
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, "installation-id"), "not an id\n");
    expect(() => storeIn(home).installationId()).toThrow(expect.objectContaining({ code: "state_corrupt" }));
  });
});

describe("host keys pinned behind a writer's back", () => {
  const KEY = { type: "ssh-ed25519", key: "AAAAC3NzaC1lZDI1NTE5AAAAICzIIkOoZ4t+r6IHZGmBVfAGUpGnkGisTUgijgsbMS37" };
  const host = (alias: string, ip: string) => ({
    rank: 0,
    slice: 0,
    workerId: 0,
    sshAlias: alias,
    externalIp: ip,
    internalIp: "10.0.0.2",
    user: "gcpuser",
    port: 22,
    identityFile: "/k",
  });
  function twoReplicas(name: string): DeploymentState {
    const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name, replicas: 2, tpu: { nodes: 1 } } }], {});
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const s = newState(r.config, specOf(r.config));
    return {
      ...s,
      replicas: s.replicas.map((x) => ({ ...x, phase: "serving" as const, hosts: [host(x.cluster, `198.18.0.${10 + x.replica}`)] })),
    };
  }

  it("write keeps a pin on disk that the writer's older copy lacks, in whichever replica it was made", () => {
    const store = storeIn(newHome());
    const old = twoReplicas("pins");
    store.write(old);
    // Another process pinned replica 1's host on first use.
    const pinned = store.read("pins");
    if (!pinned) throw new Error("no state");
    store.write({
      ...pinned,
      replicas: pinned.replicas.map((r) =>
        r.replica === 1 ? { ...r, hosts: r.hosts.map((h) => ({ ...h, hostKeys: [KEY], hostKeysFrom: "first-use" as const })) } : r,
      ),
    });
    // The older copy's writer changes replica 0 only.
    store.write({ ...old, replicas: old.replicas.map((r) => (r.replica === 0 ? { ...r, phase: "starting" as const } : r)) });
    const back = store.read("pins");
    expect(back?.replicas.map((r) => r.phase)).toEqual(["starting", "serving"]);
    expect(back?.replicas[1]?.hosts[0]).toMatchObject({ hostKeys: [KEY], hostKeysFrom: "first-use" });
    expect(back?.replicas[0]?.hosts[0]?.hostKeys).toBeUndefined();
  });

  it("holds says whether this store holds the deployment's lock", () => {
    const store = storeIn(newHome());
    expect(store.holds("held")).toBe(false);
    const lock = store.lock("held", "up", HOLD);
    expect(store.holds("held")).toBe(true);
    lock.release();
    expect(store.holds("held")).toBe(false);
  });

  it("launch.hostKeyWait survives the recorded spec", () => {
    const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name: "wait", launch: { hostKeyWait: "3s" } } }], {});
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const store = storeIn(newHome());
    store.write(newState(r.config, specOf(r.config)));
    expect(store.read("wait")?.config.launch.hostKeyWaitMs).toBe(3000);
  });
});

describe("a crash in the middle of a write", () => {
  it("a stale temp file from a crashed write changes nothing", () => {
    const home = newHome();
    const store = storeIn(home);
    const before = state("crashy", "serving");
    store.write(before);
    const stale = `${store.path("crashy")}.4242.1767268800000.tmp`;
    writeFileSync(stale, '{"version": 1, "name": "crashy", "phase": "fail', { mode: 0o600 });
    expect(phaseOf(store.read("crashy"))).toBe("serving");
    expect(store.list()).toEqual(["crashy"]);
    store.write(withPhase(before, "stopped"));
    expect(phaseOf(store.read("crashy"))).toBe("stopped");
  });

  it("SIGKILL while writing big states leaves state.json whole (one of the versions written)", async () => {
    ensureDist();
    const home = newHome();
    const path = join(home, "state.json");
    const writer = join(tmp, "writer.mjs");
    // Each version is ~2 MB of one repeated digit, so a torn file would mix digits or fail to parse.
    writeFileSync(
      writer,
      `import { writeFileAtomic } from ${JSON.stringify(DIST_STORE)};
const path = process.argv[2];
for (let i = 0; ; i++) {
  writeFileAtomic(path, JSON.stringify({ version: i, fill: String(i % 10).repeat(2_000_000) }));
  if (i === 0) process.stdout.write("first\\n");
}
`,
    );
    for (let round = 0; round < 5; round++) {
      const child = spawn(process.execPath, [writer, path], { stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const v = JSON.parse(readFileSync(path, "utf8")) as { version: number; fill: string };
      expect(v.fill).toBe(String(v.version % 10).repeat(2_000_000));
      expect(mode(path)).toBe(0o600);
    }
  }, 60_000);
});

describe("lock", () => {
  it("refuses while a live process holds it, naming that process", () => {
    const store = storeIn(newHome());
    const holder = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      const pid = holder.pid ?? 0;
      mkdirSync(store.dir("busy"), { recursive: true });
      const lockPath = join(store.dir("busy"), "lock");
      writeFileSync(lockPath, JSON.stringify(lockInfo(pid, hostname(), "relaunch")));
      const err = operationError(() => store.lock("busy", "up", HOLD));
      expect(err.code).toBe("locked");
      expect(err.exitCode).toBe(1);
      expect(err.message).toBe(
        `deployment busy is busy: relaunch (pid ${pid} on ${hostname()}) holds its lock since 2026-01-01T12:00:00.000Z`,
      );
      expect(JSON.parse(readFileSync(lockPath, "utf8"))).toEqual(lockInfo(pid, hostname(), "relaunch"));
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("refuses a second lock from the same process", () => {
    const store = storeIn(newHome());
    const first = store.lock("d", "up", HOLD);
    const err = operationError(() => store.lock("d", "down", HOLD));
    expect(err.code).toBe("locked");
    expect(err.message).toContain(`up (pid ${process.pid} on ${hostname()})`);
    first.release();
  });

  it("refuses a lock held on another machine even if that pid is dead here", () => {
    const store = storeIn(newHome());
    mkdirSync(store.dir("remote"), { recursive: true });
    writeFileSync(join(store.dir("remote"), "lock"), JSON.stringify(lockInfo(deadPid(), "laptop-of-someone-else")));
    const err = operationError(() => store.lock("remote", "up", HOLD));
    expect(err.code).toBe("locked");
    expect(err.message).toContain("on laptop-of-someone-else");
  });

  it("takes over a lock whose holder died, and says whose it was", () => {
    const store = storeIn(newHome());
    const dead = lockInfo(deadPid(), hostname(), "up");
    mkdirSync(store.dir("orphan"), { recursive: true });
    const lockPath = join(store.dir("orphan"), "lock");
    writeFileSync(lockPath, JSON.stringify(dead));
    const lock = store.lock("orphan", "relaunch", HOLD);
    expect(lock.tookOverFrom).toEqual(dead);
    expect(lock.tookOverBecause).toBe("it is no longer running");
    const now = JSON.parse(readFileSync(lockPath, "utf8")) as LockInfo;
    expect(now).toMatchObject({ pid: process.pid, host: hostname(), command: "relaunch" });
    expect(mode(lockPath)).toBe(0o600);
    expect(readdirSync(store.dir("orphan"))).toEqual(["lock"]);
    lock.release();
  });

  it("takes over an empty (torn) lock file", () => {
    const store = storeIn(newHome());
    mkdirSync(store.dir("torn"), { recursive: true });
    writeFileSync(join(store.dir("torn"), "lock"), "");
    const lock = store.lock("torn", "up", HOLD);
    expect(lock.tookOverFrom).toBeUndefined();
    expect(JSON.parse(readFileSync(join(store.dir("torn"), "lock"), "utf8"))).toMatchObject({ pid: process.pid });
    lock.release();
  });

  it("ignores a takeover guard left by a crashed process once it is over 10 s old", () => {
    const store = storeIn(newHome());
    mkdirSync(store.dir("g"), { recursive: true });
    const lockPath = join(store.dir("g"), "lock");
    writeFileSync(lockPath, JSON.stringify(lockInfo(deadPid())));
    writeFileSync(`${lockPath}.takeover`, "");
    const old = new Date(Date.now() - 60_000);
    utimesSync(`${lockPath}.takeover`, old, old);
    const lock = store.lock("g", "up", HOLD);
    expect(JSON.parse(readFileSync(lockPath, "utf8"))).toMatchObject({ pid: process.pid });
    expect(existsSync(`${lockPath}.takeover`)).toBe(false);
    lock.release();
  });

  it("waits out a fresh takeover guard rather than racing it", () => {
    const store = storeIn(newHome());
    mkdirSync(store.dir("g2"), { recursive: true });
    const lockPath = join(store.dir("g2"), "lock");
    const dead = JSON.stringify(lockInfo(deadPid()));
    writeFileSync(lockPath, dead);
    writeFileSync(`${lockPath}.takeover`, "");
    const err = operationError(() => store.lock("g2", "up", HOLD));
    expect(err.code).toBe("locked");
    expect(readFileSync(lockPath, "utf8")).toBe(dead);
  });

  it("writes the holder's pid, host, command, start, process start time, boot id and deadline", () => {
    const at = new Date("2026-03-01T08:00:00.000Z");
    const store = storeIn(newHome(), () => at);
    const lock = store.lock("fmt", "tpu-deploy up", { maxHoldMs: 90 * 60_000 });
    const written = JSON.parse(readFileSync(join(store.dir("fmt"), "lock"), "utf8")) as LockInfo;
    expect(written).toEqual({
      pid: process.pid,
      host: hostname(),
      command: "tpu-deploy up",
      startedAt: "2026-03-01T08:00:00.000Z",
      procStartTicks: startTicks(process.pid),
      bootId: BOOT_ID,
      deadline: "2026-03-01T09:30:00.000Z",
    });
    lock.release();
  });

  it("takes over a lock whose pid is alive but is another process (the pid was reused)", async () => {
    const store = storeIn(newHome());
    const other = await liveHolder();
    try {
      // The pid is alive, but the process that wrote the lock started at another time.
      const reused = fullLockInfo(other.pid, { procStartTicks: startTicks(other.pid) - 1 });
      const lockPath = writeLock(store, "reused", reused);
      const lock = store.lock("reused", "tpu-deploy relaunch", HOLD);
      expect(lock.tookOverFrom).toEqual(reused);
      expect(lock.tookOverBecause).toBe("it is no longer running (its pid now belongs to another process)");
      expect(JSON.parse(readFileSync(lockPath, "utf8"))).toMatchObject({ pid: process.pid, command: "tpu-deploy relaunch" });
      expect(other.exitCode).toBeNull(); // taken over, not killed
      lock.release();
    } finally {
      other.kill("SIGKILL");
    }
  });

  it("takes over a lock written before a reboot (another boot id), even if its pid is alive again", async () => {
    const store = storeIn(newHome());
    const other = await liveHolder();
    try {
      const before = fullLockInfo(other.pid, { bootId: "00000000-1111-2222-3333-444444444444" });
      writeLock(store, "rebooted", before);
      const lock = store.lock("rebooted", "tpu-deploy relaunch", HOLD);
      expect(lock.tookOverFrom).toEqual(before);
      expect(lock.tookOverBecause).toBe("it was written before this machine rebooted");
      lock.release();
    } finally {
      other.kill("SIGKILL");
    }
  });

  it("recognises a live holder whose name has spaces and ')' in it: busy, not taken over", async () => {
    const dir = join(tmp, "odd-comm");
    mkdirSync(dir, { recursive: true });
    const program = join(dir, "x) y (z");
    writeFileSync(program, readFileSync(spawnSync("which", ["sleep"], { encoding: "utf8" }).stdout.trim()), { mode: 0o755 });
    const store = storeIn(newHome(), () => new Date("2026-01-01T12:30:00.000Z"));
    const holder = await liveHolder(program);
    try {
      const info = fullLockInfo(holder.pid);
      const lockPath = writeLock(store, "odd", info);
      const err = lockedError(() => store.lock("odd", "tpu-deploy relaunch", HOLD));
      expect(err.stuck).toBe(false);
      expect(JSON.parse(readFileSync(lockPath, "utf8"))).toEqual(info);
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("a live holder within its deadline (and the 5 min after it) is busy, and the message says until when", async () => {
    const holder = await liveHolder();
    try {
      const info = fullLockInfo(holder.pid, { deadline: "2026-01-01T13:00:00.000Z" });
      for (const now of ["2026-01-01T12:00:01.000Z", "2026-01-01T13:00:00.000Z", "2026-01-01T13:05:00.000Z"]) {
        const store = storeIn(newHome(), () => new Date(now));
        const lockPath = writeLock(store, "held", info);
        const err = lockedError(() => store.lock("held", "tpu-deploy up", HOLD));
        expect(err.stuck, now).toBe(false);
        expect(err.exitCode).toBe(1);
        expect(err.message).toBe(
          `deployment held is busy: tpu-deploy relaunch (pid ${holder.pid} on ${hostname()}) holds its lock since 2026-01-01T12:00:00.000Z (deadline 2026-01-01T13:00:00.000Z)`,
        );
        expect(JSON.parse(readFileSync(lockPath, "utf8"))).toEqual(info);
      }
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("a live holder more than 5 min past its deadline is stuck: a locked error naming it, marked stuck, lock kept", async () => {
    const holder = await liveHolder();
    try {
      const info = fullLockInfo(holder.pid, { deadline: "2026-01-01T13:00:00.000Z" });
      const store = storeIn(newHome(), () => new Date("2026-01-01T13:05:00.001Z"));
      const lockPath = writeLock(store, "wedged", info);
      const err = lockedError(() => store.lock("wedged", "tpu-deploy relaunch", HOLD));
      expect(err).toBeInstanceOf(LockedError);
      expect(err.stuck).toBe(true);
      expect(err.exitCode).toBe(1);
      expect(err.message).toBe(
        `deployment wedged looks stuck: tpu-deploy relaunch (pid ${holder.pid} on ${hostname()}) holds its lock since 2026-01-01T12:00:00.000Z, past its deadline 2026-01-01T13:00:00.000Z`,
      );
      expect(err.holder).toEqual(info);
      expect(err.hint).toContain(`kill ${holder.pid} and the next run takes the lock over`);
      // Never taken over: the holder is alive and may still be doing something.
      expect(JSON.parse(readFileSync(lockPath, "utf8"))).toEqual(info);
      expect(holder.exitCode).toBeNull();
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("a holder on another machine past its deadline is stuck too (its pid cannot be checked from here)", () => {
    const store = storeIn(newHome(), () => new Date("2026-01-02T00:00:00.000Z"));
    const lockPath = writeLock(store, "far", { ...fullLockInfo(process.pid), host: "laptop-of-someone-else", pid: 999_999 });
    const err = lockedError(() => store.lock("far", "tpu-deploy relaunch", HOLD));
    expect(err.stuck).toBe(true);
    expect(err.message).toContain("(pid 999999 on laptop-of-someone-else)");
    // Never taken over from here, even once that run is gone: the hint says to remove the lock by hand.
    expect(err.hint).toContain(`kill 999999 there, then remove ${lockPath}`);
  });

  it("a lock of the previous format (no boot id, start time or deadline): a live pid is busy, never stuck; a dead one is taken over", async () => {
    const holder = await liveHolder();
    try {
      const store = storeIn(newHome(), () => new Date("2027-01-01T00:00:00.000Z"));
      const old = lockInfo(holder.pid, hostname(), "tpu-deploy relaunch");
      writeLock(store, "old", old);
      const err = lockedError(() => store.lock("old", "tpu-deploy up", HOLD));
      expect(err.stuck).toBe(false);
      expect(err.message).toBe(
        `deployment old is busy: tpu-deploy relaunch (pid ${holder.pid} on ${hostname()}) holds its lock since 2026-01-01T12:00:00.000Z`,
      );
      const gone = lockInfo(deadPid(), hostname(), "tpu-deploy relaunch");
      writeLock(store, "old-dead", gone);
      const lock = store.lock("old-dead", "tpu-deploy up", HOLD);
      expect(lock.tookOverFrom).toEqual(gone);
      lock.release();
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("release removes our own lock, once; the next lock is a fresh one", () => {
    const store = storeIn(newHome());
    const lock = store.lock("r", "up", HOLD);
    const lockPath = join(store.dir("r"), "lock");
    expect(existsSync(lockPath)).toBe(true);
    lock.release();
    expect(existsSync(lockPath)).toBe(false);
    lock.release();
    const again = store.lock("r", "down", HOLD);
    expect(again.tookOverFrom).toBeUndefined();
    again.release();
  });

  it("release leaves a lock that another process has taken since", () => {
    const store = storeIn(newHome());
    const lock = store.lock("r2", "up", HOLD);
    const lockPath = join(store.dir("r2"), "lock");
    const other = JSON.stringify(lockInfo(process.pid + 1, hostname(), "relaunch"));
    writeFileSync(lockPath, other);
    lock.release();
    expect(readFileSync(lockPath, "utf8")).toBe(other);
  });
});

function ensureDist(): void {
  const built = existsSync(DIST_STORE) ? statSync(DIST_STORE).mtimeMs : 0;
  if (SOURCES.some((s) => statSync(s).mtimeMs > built)) {
    // tsc emits even when someone else's file has a type error; what matters is that our file is current.
    spawnSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, stdio: "ignore" });
  }
  expect(statSync(DIST_STORE).mtimeMs).toBeGreaterThanOrEqual(Math.max(...SOURCES.map((s) => statSync(s).mtimeMs)));
}

describe("two processes taking over one stale lock at the same moment", () => {
  // Each contender imports the built store, says "ready", then on a shared instant tries the lock and
  // reports; winners keep holding (never release) until the parent ends their stdin.
  const contender = join(tmp, "contender.mjs");
  beforeAll(() => {
    ensureDist();
    writeFileSync(
      contender,
      `import { StateStore } from ${JSON.stringify(DIST_STORE)};
const [home, name] = process.argv.slice(2);
const store = new StateStore({ TPU_DEPLOY_HOME: home });
let buf = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => {
  buf += d;
  if (!buf.includes("\\n") || buf === "done") return;
  const at = Number(buf.trim());
  buf = "done";
  while (Date.now() < at) {}
  let result;
  try {
    const lock = store.lock(name, "race", { maxHoldMs: 60_000 });
    result = { won: true, pid: process.pid, tookOverFrom: lock.tookOverFrom ?? null };
  } catch (err) {
    result = { won: false, pid: process.pid, code: err.code, message: err.message };
  }
  process.stdout.write(JSON.stringify(result) + "\\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdout.write("ready\\n");
`,
    );
  }, 120_000);

  interface Result {
    won: boolean;
    pid: number;
    code?: string;
    tookOverFrom?: LockInfo | null;
  }

  function lines(child: ChildProcess): AsyncIterator<string> {
    if (!child.stdout) throw new Error("no stdout");
    return createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  async function race(home: string, name: string): Promise<{ results: Result[]; lockText: string }> {
    const children = [0, 1].map(() => spawn(process.execPath, [contender, home, name], { stdio: ["pipe", "pipe", "inherit"] }));
    try {
      const readers = children.map(lines);
      for (const r of readers) expect((await r.next()).value).toBe("ready");
      const at = Date.now() + 40;
      for (const c of children) c.stdin?.write(`${at}\n`);
      const results = await Promise.all(readers.map(async (r) => JSON.parse(String((await r.next()).value)) as Result));
      // Read while both still run: the winner must still hold it.
      const lockText = readFileSync(join(home, "deployments", name, "lock"), "utf8");
      return { results, lockText };
    } finally {
      for (const c of children) c.stdin?.end();
      await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once("exit", r)) : undefined)));
    }
  }

  it.each([
    { stale: "a lock naming a dead pid", text: () => JSON.stringify(lockInfo(deadPid())) },
    { stale: "an empty lock file (its writer crashed before writing)", text: () => "" },
    {
      stale: "a lock naming a live pid of another start time (reused)",
      text: (live: number) => JSON.stringify(fullLockInfo(live, { procStartTicks: startTicks(live) + 7 })),
    },
  ])(
    "exactly one wins, 20 times over, for $stale",
    async ({ text }) => {
      const home = newHome();
      const live = await liveHolder();
      try {
        for (let round = 0; round < 20; round++) {
          const name = `race-${round}`;
          mkdirSync(join(home, "deployments", name), { recursive: true });
          writeFileSync(join(home, "deployments", name, "lock"), text(live.pid));
          const { results, lockText } = await race(home, name);
          const winners = results.filter((r) => r.won);
          expect(winners, `round ${round}: ${JSON.stringify(results)}`).toHaveLength(1);
          expect(results.find((r) => !r.won)?.code).toBe("locked");
          expect(JSON.parse(lockText)).toMatchObject({ pid: winners[0]?.pid, command: "race" });
        }
      } finally {
        live.kill("SIGKILL");
      }
    },
    120_000,
  );
});
