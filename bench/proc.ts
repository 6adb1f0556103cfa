// Running the real `tpu-deploy` binary as a user would, and watching it from outside: every output line
// with the wall-clock time it arrived, and the process's own CPU time and memory read from /proc while it
// runs (its children — sky, ssh, the simulated hosts — are other processes and are not counted).
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

export interface TimedLine {
  /** Date.now() when the line arrived: the same clock as the sim's call logs. */
  t: number;
  stream: "stdout" | "stderr";
  text: string;
}

export interface Usage {
  /** user + system CPU of the process itself, from /proc/PID/stat (10 ms ticks). */
  cpuMs: number;
  /** VmHWM: the peak resident set size so far, kB. */
  peakRssKb: number;
  /** VmRSS now, kB. */
  rssKb: number;
}

export interface Finished {
  code: number;
  startedAt: number;
  endedAt: number;
  wallMs: number;
  lines: TimedLine[];
  stdout: string;
  stderr: string;
  /** The last sample taken before the process exited (sampled every `sampleMs`). */
  usage: Usage;
}

export interface Running {
  child: ChildProcess;
  pid: number;
  lines: TimedLine[];
  /** Resolves with the first line (already seen or to come) matching re, after `after` if given. */
  waitFor(re: RegExp, opts?: { timeoutMs?: number; after?: number }): Promise<TimedLine>;
  /** The process's usage right now (undefined once it exited). */
  usage(): Usage | undefined;
  done: Promise<Finished>;
}

const TICK_MS = 10; // getconf CLK_TCK = 100 on Linux

export function readUsage(pid: number): Usage | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    const cpuMs = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
    return { cpuMs, peakRssKb: kb("VmHWM"), rssKb: kb("VmRSS") };
  } catch {
    return undefined;
  }
}

export function start(
  argv: string[],
  opts: { env: NodeJS.ProcessEnv; cwd?: string; sampleMs?: number; onLine?: (l: TimedLine) => void },
): Running {
  const [cmd = "", ...args] = argv;
  const startedAt = Date.now();
  const t0 = performance.now();
  const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid ?? -1;
  const lines: TimedLine[] = [];
  const text = { stdout: "", stderr: "" };
  const waiters: { re: RegExp; after: number; resolve: (l: TimedLine) => void }[] = [];
  const onLine = (l: TimedLine) => {
    lines.push(l);
    opts.onLine?.(l);
    for (const w of [...waiters]) {
      if (l.t >= w.after && w.re.test(l.text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  for (const stream of ["stdout", "stderr"] as const) {
    let partial = "";
    child[stream]?.setEncoding("utf8").on("data", (d: string) => {
      const t = Date.now();
      text[stream] += d;
      partial += d;
      let nl = partial.indexOf("\n");
      while (nl >= 0) {
        onLine({ t, stream, text: partial.slice(0, nl) });
        partial = partial.slice(nl + 1);
        nl = partial.indexOf("\n");
      }
    });
  }
  let last: Usage = { cpuMs: 0, peakRssKb: 0, rssKb: 0 };
  let exited = false;
  const sample = () => {
    const u = readUsage(pid);
    if (u && Number.isFinite(u.peakRssKb)) last = u;
  };
  const timer = setInterval(sample, opts.sampleMs ?? 20);
  sample();
  const done = new Promise<Finished>((resolve, reject) => {
    child.once("error", (err) => {
      clearInterval(timer);
      reject(err);
    });
    child.once("close", (code, signal) => {
      exited = true;
      clearInterval(timer);
      const endedAt = Date.now();
      resolve({
        code: code ?? (signal ? 128 : 1),
        startedAt,
        endedAt,
        wallMs: performance.now() - t0,
        lines,
        stdout: text.stdout,
        stderr: text.stderr,
        usage: last,
      });
    });
  });
  return {
    child,
    pid,
    lines,
    usage: () => (exited ? undefined : readUsage(pid)),
    done,
    waitFor(re, o = {}) {
      const after = o.after ?? 0;
      const seen = lines.find((l) => l.t >= after && re.test(l.text));
      if (seen) return Promise.resolve(seen);
      return new Promise<TimedLine>((resolve, reject) => {
        const timeout = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${re} from ${argv.slice(1, 4).join(" ")}; last output:\n${tail(lines)}`));
        }, o.timeoutMs ?? 120_000);
        const w = {
          re,
          after,
          resolve: (l: TimedLine) => {
            clearTimeout(timeout);
            resolve(l);
          },
        };
        waiters.push(w);
        void done.then(() => {
          if (!waiters.includes(w)) return;
          waiters.splice(waiters.indexOf(w), 1);
          clearTimeout(timeout);
          reject(new Error(`${argv.slice(1, 4).join(" ")} exited before printing ${re}; last output:\n${tail(lines)}`));
        });
      });
    },
  };
}

export function tail(lines: readonly TimedLine[], n = 25): string {
  return lines
    .slice(-n)
    .map((l) => `  ${l.text}`)
    .join("\n");
}
