// Deployment state under TPU_DEPLOY_HOME: one directory per deployment with state.json (written
// atomically: temp file, fsync, rename, fsync of the directory) and a lock file held by one run at a time.
// Long because the state file and the lock share the atomic-file discipline; splitting them would split it.
import {
  accessSync,
  appendFileSync,
  closeSync,
  constants,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { hostname } from "node:os";
import { join, relative, resolve } from "node:path";
import { NAME_PATTERN, resolveSpec } from "../core/config.js";
import { checkName, stateHome } from "../core/paths.js";
import { judgeLock, type LockInfo, parseLockInfo } from "../core/lock.js";
import { deriveInstallationId, INSTALLATION_ID } from "../core/ownership.js";
import { type DeploymentState, keepPinnedHostKeys, parseState, serializeState } from "../core/state.js";
import { LockedError, OperationError, UsageError } from "../errors.js";

export { checkName };

export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const dir = path.slice(0, path.lastIndexOf("/"));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  try {
    const dfd = openSync(dir, constants.O_RDONLY);
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
}

export type { LockInfo };

export interface LockOptions {
  /** How long this run may hold the lock (core/lock.ts sets it per command); written into the lock as its deadline. */
  maxHoldMs: number;
}

export interface Lock {
  release(): void;
  /** Set when a stale lock (its holder gone) was taken over. */
  tookOverFrom: LockInfo | undefined;
  /** Why that holder counted as gone, for the warning. */
  tookOverBecause: string | undefined;
}

export interface StateStoreOptions {
  /** The wall clock of lock deadlines (tests). Not the run's injected clock: other processes compare against these. */
  now?: () => Date;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks after boot); undefined off Linux or when unreadable. */
function processStartTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 2 is "(comm)", and comm may hold spaces and ')': split after its last ')', where field 3 comes first.
    const fields = stat
      .slice(stat.lastIndexOf(")") + 1)
      .trim()
      .split(/\s+/);
    const ticks = Number(fields[22 - 3]);
    return Number.isSafeInteger(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

function bootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

export class StateStore {
  private readonly now: () => Date;
  /** Deployments whose lock this process holds (this store's own lock() calls). */
  private readonly held = new Set<string>();

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    opts: StateStoreOptions = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /** Whether this process holds the deployment's lock, so it may write the state without taking it. */
  holds(name: string): boolean {
    return this.held.has(name);
  }

  private root(): string {
    return resolve(stateHome(this.env), "deployments");
  }

  /** The deployment's directory; refuses any name that is not one, and any path outside the store. */
  dir(name: string): string {
    checkName(name);
    const root = this.root();
    const dir = resolve(root, name);
    const rel = relative(root, dir);
    if (rel === "" || rel.startsWith("..") || rel.includes("/")) throw new UsageError(`'${name}' resolves outside ${root}`);
    return dir;
  }

  /** Replica R's task file: sky.yaml for replica 0 (as before replicas), sky-r<R>.yaml after. */
  taskPath(name: string, replica = 0): string {
    return join(this.dir(name), replica === 0 ? "sky.yaml" : `sky-r${replica}.yaml`);
  }

  launchLogPath(name: string): string {
    return join(this.dir(name), "sky-launch.log");
  }

  /** The rendered task, at the path the plan gave it (inside the deployment's directory), where `sky launch` reads it. */
  writeTask(name: string, yaml: string, path = this.taskPath(name)): string {
    const rel = relative(this.dir(name), path);
    if (rel.startsWith("..") || rel.includes("/")) throw new UsageError(`task file ${path} is outside ${this.dir(name)}`);
    writeFileAtomic(path, yaml, 0o600);
    return path;
  }

  appendLaunchLog(name: string, text: string): void {
    mkdirSync(this.dir(name), { recursive: true, mode: 0o700 });
    appendFileSync(this.launchLogPath(name), text, { mode: 0o600 });
  }

  /** Removes the directory when nothing is in it (gc made it only to hold a lock). */
  removeIfEmpty(name: string): void {
    try {
      if (readdirSync(this.dir(name)).length === 0) rmdirSync(this.dir(name));
    } catch {
      // gone or not empty
    }
  }

  /**
   * This installation's id (the owner label's value): read from TPU_DEPLOY_HOME/installation-id, else derived
   * (the same value every time on this machine, user and state directory) and, with `create`, written there.
   */
  installationId(opts: { create?: boolean } = {}): string {
    const home = stateHome(this.env);
    const file = join(home, "installation-id");
    try {
      const stored = readFileSync(file, "utf8").trim();
      if (INSTALLATION_ID.test(stored)) return stored;
      throw new OperationError("state_corrupt", `${file} does not hold an installation id (16 hex digits)`, {
        hint: "it names who owns this machine's clusters: restore it from a backup, or move it away to start a new identity",
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    let machineId = "";
    try {
      machineId = readFileSync("/etc/machine-id", "utf8").trim();
    } catch {
      // containers often have none: the host name and the directory still tell installations apart
    }
    const id = deriveInstallationId({ machineId, hostname: hostname(), stateHome: resolve(home), uid: process.getuid?.() ?? 0 });
    if (opts.create) {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      writeFileAtomic(file, `${id}\n`, 0o600);
    }
    return id;
  }

  /** Whether the state directory can be made and written (doctor). */
  checkWritable(): { ok: true; path: string } | { ok: false; path: string; why: string } {
    const path = stateHome(this.env);
    try {
      mkdirSync(path, { recursive: true, mode: 0o700 });
      accessSync(path, constants.W_OK);
      return { ok: true, path };
    } catch (err) {
      return { ok: false, path, why: (err as Error).message };
    }
  }

  exists(name: string): boolean {
    try {
      statSync(this.dir(name));
      return true;
    } catch {
      return false;
    }
  }

  path(name: string): string {
    return join(this.dir(name), "state.json");
  }

  read(name: string): DeploymentState | undefined {
    let text: string;
    try {
      text = readFileSync(this.path(name), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const parsed = parseState(text);
    const corrupt = (why: string) =>
      new OperationError("state_corrupt", `state file corrupt: ${this.path(name)} (${why})`, {
        hint: `it is written atomically, so this is outside damage: move it away (mv ${this.path(name)} ${this.path(name)}.bad), then tpu-deploy gc finds what it described`,
      });
    if (!parsed.ok) throw corrupt(parsed.why);
    // The spec is complete (project included), so the environment adds nothing: the same config everywhere.
    const resolved = resolveSpec(parsed.state.spec);
    if (!resolved.ok) throw corrupt(`its config does not resolve: ${resolved.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
    return { ...parsed.state, config: resolved.config };
  }

  write(state: DeploymentState): void {
    // Host keys pinned since the writer read its copy (a status that met a host first, in any replica) are kept.
    writeFileAtomic(this.path(state.name), serializeState(keepPinnedHostKeys(this.onDisk(state.name), state), new Date()));
  }

  /** The stored state as it is on disk now, unresolved; undefined when absent or damaged (then replaced whole). */
  private onDisk(name: string): Pick<DeploymentState, "replicas"> | undefined {
    try {
      const parsed = parseState(readFileSync(this.path(name), "utf8"));
      return parsed.ok ? parsed.state : undefined;
    } catch {
      return undefined;
    }
  }

  remove(name: string): void {
    // dir() has refused anything but a name inside the store: `down ..` or an empty name cannot get here.
    rmSync(this.dir(name), { recursive: true, force: true });
  }

  list(): string[] {
    try {
      return readdirSync(this.root(), { withFileTypes: true })
        .filter((d) => d.isDirectory() && NAME_PATTERN.test(d.name))
        .map((d) => d.name)
        .filter((n) => {
          try {
            readFileSync(this.path(n));
            return true;
          } catch {
            return false;
          }
        })
        .sort();
    } catch {
      return [];
    }
  }

  /**
   * Takes the deployment's lock without waiting. A stale lock (its holder gone: dead, its pid reused, or
   * from before a reboot) is taken over; a live holder's is not: LockedError, marked stuck when that holder
   * is past its deadline by core/lock.ts STUCK_AFTER_MS.
   */
  lock(name: string, command: string, opts: LockOptions): Lock {
    const dir = this.dir(name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, "lock");
    const now = this.now();
    const procStartTicks = processStartTicks(process.pid);
    const here = { host: hostname(), bootId: bootId() };
    const info: LockInfo = {
      pid: process.pid,
      host: here.host,
      command,
      startedAt: now.toISOString(),
      ...(procStartTicks === undefined ? {} : { procStartTicks }),
      ...(here.bootId === undefined ? {} : { bootId: here.bootId }),
      deadline: new Date(now.getTime() + opts.maxHoldMs).toISOString(),
    };
    let tookOverFrom: LockInfo | undefined;
    let tookOverBecause: string | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      // Written whole under a temporary name, then linked into place (link fails if a lock exists): a
      // lock created empty and then filled was seen empty by a racing process, taken for torn, and removed.
      const tmp = `${path}.${process.pid}.tmp`;
      const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
      try {
        writeSync(fd, JSON.stringify(info));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      try {
        linkSync(tmp, path);
        let released = false;
        this.held.add(name);
        return {
          tookOverFrom,
          tookOverBecause,
          release: () => {
            if (released) return;
            released = true;
            this.held.delete(name);
            try {
              if (parseLockInfo(readFileSync(path, "utf8"))?.pid === process.pid) unlinkSync(path);
            } catch {
              // already gone
            }
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      } finally {
        unlinkSync(tmp);
      }
      let text: string | undefined;
      try {
        text = readFileSync(path, "utf8");
      } catch {
        text = undefined; // just released
      }
      // Unreadable as a lock: torn (its writer crashed) or just released; stale either way.
      const holder = text === undefined ? undefined : parseLockInfo(text);
      tookOverFrom = holder;
      tookOverBecause = undefined;
      if (holder) {
        const verdict = judgeLock(holder, { ...here, now: this.now() }, (pid) => ({
          alive: pidAlive(pid),
          startTicks: processStartTicks(pid),
        }));
        if (verdict.kind === "held") throw lockedError(name, path, holder, verdict.stuck, holder.host === here.host);
        tookOverBecause = verdict.why;
      }
      // The holder is gone: take over. A second file serialises takeovers, so two contenders can never
      // both remove the stale lock and both believe they hold the new one.
      const guard = `${path}.takeover`;
      try {
        const gfd = openSync(guard, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
        closeSync(gfd);
      } catch {
        try {
          if (Date.now() - statSync(guard).mtimeMs > 10_000) unlinkSync(guard);
        } catch {
          // gone already
        }
        continue;
      }
      try {
        // Only the very lock judged stale: a contender may have replaced it since.
        if (text !== undefined && readFileSync(path, "utf8") === text) unlinkSync(path);
      } catch {
        // already removed
      } finally {
        unlinkSync(guard);
      }
    }
    throw new LockedError(`could not take the lock of ${name}`, { hint: "run the command again" });
  }
}

function lockedError(name: string, path: string, holder: LockInfo, stuck: boolean, sameHost: boolean): LockedError {
  const who = `${holder.command} (pid ${holder.pid} on ${holder.host}) holds its lock since ${holder.startedAt}`;
  if (stuck) {
    const look = `ps -o pid,etime,args -p ${holder.pid}`;
    return new LockedError(`deployment ${name} looks stuck: ${who}, past its deadline ${holder.deadline}`, {
      holder,
      stuck,
      hint: sameHost
        ? `that run is alive but should have ended: see what it does (${look}); if it hangs, kill ${holder.pid} and the next run takes the lock over`
        : `that run is on ${holder.host}: see what it does there (${look}); if it hangs, kill ${holder.pid} there, then remove ${path} (a lock from another machine is never taken over from here)`,
    });
  }
  return new LockedError(`deployment ${name} is busy: ${who}${holder.deadline ? ` (deadline ${holder.deadline})` : ""}`, {
    holder,
    hint: "wait for it to finish; if that process is gone, run the command again",
  });
}
