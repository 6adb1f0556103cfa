// The SkyPilot CLI, through execa with argv arrays only (never a shell string). The only importer of execa.
import { classifyLaunch, type LaunchOutcome, requestIdFrom } from "../core/sky-outcome.js";
import { OperationError, SkyError } from "../errors.js";

export interface SkyClusterRecord {
  name: string;
  status: string;
  cluster_name_on_cloud: string | null;
  region: string | null;
  nodes: number;
  node_names?: string | null;
  labels?: Record<string, string> | null;
  last_event?: string | null;
  launched_at?: number | null;
  resources_str?: string | null;
  [key: string]: unknown;
}

export interface SkyRunOptions {
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
  onLine?: ((line: string) => void) | undefined;
  timeoutMs?: number | undefined;
}

export interface SkyLaunchResult {
  outcome: LaunchOutcome | { kind: "cancelled"; requestId: string | undefined; reason: "interrupted" | "timeout" };
  argv: string[];
  output: string;
}

export interface Sky {
  launch(argv: string[], zone: string, opts: SkyRunOptions): Promise<SkyLaunchResult>;
  status(
    names: string[],
    opts: { verbose?: boolean; refresh?: boolean; env: NodeJS.ProcessEnv; signal?: AbortSignal },
  ): Promise<SkyClusterRecord[]>;
  down(
    name: string,
    opts: { env: NodeJS.ProcessEnv; signal?: AbortSignal; onLine?: (l: string) => void },
  ): Promise<{ exitCode: number; output: string }>;
  cancelRequest(id: string, opts: { env: NodeJS.ProcessEnv }): Promise<{ exitCode: number; output: string }>;
  version(opts: { env: NodeJS.ProcessEnv }): Promise<{ ok: boolean; output: string }>;
}

export function skyExecutable(env: NodeJS.ProcessEnv): string {
  return env.TPU_DEPLOY_SKY || "sky";
}

/** `sky status -o json` prints server log lines before the JSON: parse from the first `[` or `{` line. */
export function parseStatusJson(stdout: string): SkyClusterRecord[] {
  const lines = stdout.split("\n");
  const start = lines.findIndex((l) => l.startsWith("[") || l.startsWith("{"));
  if (start < 0) return [];
  const parsed = JSON.parse(lines.slice(start).join("\n")) as unknown;
  if (!Array.isArray(parsed)) throw new Error("sky status -o json did not print a list");
  return parsed as SkyClusterRecord[];
}

export async function createSky(): Promise<Sky> {
  const { execa } = await import("execa");

  async function runSimple(args: string[], env: NodeJS.ProcessEnv, signal?: AbortSignal, onLine?: (l: string) => void) {
    const exe = skyExecutable(env);
    const child = execa(exe, args, {
      env,
      extendEnv: false,
      reject: false,
      all: true,
      stdin: "ignore",
      cancelSignal: signal,
      forceKillAfterDelay: 5000,
    });
    if (onLine) forwardLines(child.all, onLine);
    const r = await child;
    if (r.failed && (r as { code?: string }).code === "ENOENT") {
      throw new OperationError("sky_not_found", `cannot run '${exe}': not found`, {
        hint: "install SkyPilot (pip install 'skypilot[gcp]') or point TPU_DEPLOY_SKY at the sky executable",
      });
    }
    return {
      exitCode: r.exitCode ?? (r.isCanceled ? 130 : 1),
      output: String(r.all ?? ""),
      stdout: String(r.stdout ?? ""),
      canceled: r.isCanceled,
    };
  }

  return {
    async launch(argv, zone, opts) {
      const exe = skyExecutable(opts.env);
      // Not execa's cancelSignal: on Ctrl-C sky must get SIGINT (it then prints the request id to cancel).
      const child = execa(exe, argv, { env: opts.env, extendEnv: false, reject: false, all: true, stdin: "ignore" });
      let output = "";
      forwardLines(child.all, (line) => {
        output += `${line}\n`;
        opts.onLine?.(line);
      });
      let reason: "interrupted" | "timeout" | undefined;
      const stop = (why: "interrupted" | "timeout") => {
        if (reason) return;
        reason = why;
        child.kill("SIGINT");
        setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
      };
      const onAbort = () => stop("interrupted");
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const timer = opts.timeoutMs ? setTimeout(() => stop("timeout"), opts.timeoutMs) : undefined;
      try {
        const r = await child;
        if (r.failed && (r as { code?: string }).code === "ENOENT") {
          throw new OperationError("sky_not_found", `cannot run '${exe}': not found`, {
            hint: "install SkyPilot (pip install 'skypilot[gcp]') or point TPU_DEPLOY_SKY at the sky executable",
          });
        }
        output = String(r.all ?? output);
        if (reason) return { outcome: { kind: "cancelled", requestId: requestIdFrom(output), reason }, argv, output };
        return { outcome: classifyLaunch(r.exitCode ?? 1, output, zone), argv, output };
      } finally {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
      }
    },

    async status(names, opts) {
      const args = ["status", ...(opts.verbose ? ["-v"] : []), ...(opts.refresh ? ["-r"] : []), "-o", "json", ...names];
      const r = await runSimple(args, opts.env, opts.signal);
      if (r.exitCode !== 0) {
        throw new SkyError("sky_failed", `sky status failed (exit ${r.exitCode})`, {
          argv: args,
          exitCode: r.exitCode,
          outputTail: r.output.slice(-2000),
          hint: "check that the SkyPilot API server is reachable: sky api info",
        });
      }
      try {
        return parseStatusJson(r.stdout);
      } catch (cause) {
        throw new SkyError("sky_failed", "could not read sky status -o json", { argv: args, outputTail: r.stdout.slice(-2000), cause });
      }
    },

    async down(name, opts) {
      const r = await runSimple(["down", "-y", name], opts.env, opts.signal, opts.onLine);
      return { exitCode: r.exitCode, output: r.output };
    },

    async cancelRequest(id, opts) {
      const r = await runSimple(["api", "cancel", "-y", id], opts.env);
      return { exitCode: r.exitCode, output: r.output };
    },

    async version(opts) {
      const r = await runSimple(["api", "info"], opts.env);
      return { ok: r.exitCode === 0, output: r.output };
    },
  };
}

function forwardLines(stream: NodeJS.ReadableStream | undefined | null, onLine: (line: string) => void): void {
  if (!stream) return;
  let buf = "";
  stream.setEncoding?.("utf8");
  stream.on("data", (chunk: string | Buffer) => {
    buf += String(chunk);
    let i = buf.indexOf("\n");
    while (i >= 0) {
      onLine(buf.slice(0, i).replace(/\r$/, ""));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
  });
  stream.on("end", () => {
    if (buf) onLine(buf);
    buf = "";
  });
}
