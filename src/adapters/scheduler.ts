// The one place that runs `crontab` and `systemctl` and writes or removes systemd unit files, for
// `tpu-deploy schedule`. Expected outcomes (no crontab yet, no such program, a refusal) come back as values.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OperationError } from "../errors.js";

export type ToolFailure = { kind: "missing" } | { kind: "failed"; code: number | null; stderr: string };
export type CrontabRead = { kind: "ok"; text: string } | { kind: "none" } | ToolFailure;
export type SystemctlResult = { kind: "ok" } | ToolFailure;

export interface UnitFile {
  name: string;
  text: string;
}

export interface Scheduler {
  /** `crontab -l`; "none" when the user has no crontab, "missing" when there is no crontab program. */
  readCrontab(): CrontabRead;
  /** `crontab -` with text, or `crontab -r` when text is empty; throws OperationError when crontab refuses. */
  writeCrontab(text: string): void;
  systemctl(args: readonly string[]): SystemctlResult;
  /** A unit file's text; undefined when it is absent or unreadable. */
  readUnit(path: string): string | undefined;
  /** Creates dir and writes the files into it; returns their paths. */
  writeUnits(dir: string, files: readonly UnitFile[]): string[];
  /** Removes the files, then the directories `enable` or writeUnits may have made, where they are left empty. */
  removeUnits(dir: string, paths: readonly string[]): void;
  /** Creates the directory the scheduled run appends its log to. */
  makeLogDir(dir: string): void;
}

type Run = { kind: "ok"; stdout: string } | ToolFailure;

export function createScheduler(env: NodeJS.ProcessEnv, opts: { timeoutMs?: number } = {}): Scheduler {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const tool = (cmd: string, args: readonly string[], input?: string): Run => {
    const r = spawnSync(cmd, args, { env, input, encoding: "utf8", timeout: timeoutMs });
    const code = (r.error as NodeJS.ErrnoException | undefined)?.code;
    if (code === "ENOENT") return { kind: "missing" };
    if (code === "ETIMEDOUT")
      return { kind: "failed", code: null, stderr: `${cmd} ${args.join(" ")} did not finish in ${timeoutMs / 1000}s` };
    if (r.status === 0) return { kind: "ok", stdout: r.stdout ?? "" };
    return { kind: "failed", code: r.status, stderr: r.stderr || (r.error?.message ?? (r.signal ? `killed by ${r.signal}` : "")) };
  };

  return {
    readCrontab() {
      const r = tool("crontab", ["-l"]);
      if (r.kind === "ok") return { kind: "ok", text: r.stdout };
      if (r.kind === "failed" && /no crontab for/i.test(r.stderr)) return { kind: "none" };
      return r;
    },
    writeCrontab(text) {
      const remove = text.trim() === "";
      const r = remove ? tool("crontab", ["-r"]) : tool("crontab", ["-"], text);
      if (r.kind === "ok" || (remove && r.kind === "failed" && /no crontab for/i.test(r.stderr))) return;
      const why = r.kind === "missing" ? ": crontab is not installed here" : ` (exit ${r.code}): ${r.stderr.trim()}`;
      throw new OperationError("not_found", `crontab ${remove ? "-r" : "-"} failed${why}`);
    },
    systemctl(args) {
      const r = tool("systemctl", args);
      return r.kind === "ok" ? { kind: "ok" } : r;
    },
    readUnit(path) {
      try {
        return readFileSync(path, "utf8");
      } catch {
        return undefined;
      }
    },
    writeUnits(dir, files) {
      mkdirSync(dir, { recursive: true });
      return files.map((f) => {
        const path = join(dir, f.name);
        writeFileSync(path, f.text, { mode: 0o644 });
        return path;
      });
    },
    removeUnits(dir, paths) {
      for (const p of paths) rmSync(p, { force: true });
      // `enable` may have made these; leave them only if something else lives there.
      for (const d of [join(dir, "timers.target.wants"), dir, join(dir, "..")]) {
        try {
          if (existsSync(d) && readdirSync(d).length === 0) rmdirSync(d);
        } catch {
          // not ours to force
        }
      }
    },
    makeLogDir(dir) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    },
  };
}
