// The SkyPilot CLI, through execa with argv arrays only (never a shell string). The only importer of execa.
// Every call has a deadline: a wedged API server must not hang a cron run that holds a deployment's lock.
import { z } from "zod";
import { classifyLaunch, type LaunchOutcome, requestIdFrom } from "../core/sky-outcome.js";
import { OperationError, SkyError } from "../errors.js";

// `sky status -o json` (docs/upstream/skypilot.md §4): the fields tpu-deploy reads; the rest pass through.
const statusRecord = z.looseObject({
  name: z.string(),
  status: z.string(),
  cluster_name_on_cloud: z.string().nullish(),
  region: z.string().nullish(),
  nodes: z.number().nullish(),
  node_names: z.string().nullish(),
  labels: z.record(z.string(), z.string()).nullish(),
  last_event: z.string().nullish(),
  launched_at: z.number().nullish(),
  // Newer SkyPilot (docs/upstream/skypilot-seams.md §1): why a cluster is INIT.
  init_kind: z.string().nullish(),
  init_status_reason: z.string().nullish(),
});
export type SkyClusterRecord = z.infer<typeof statusRecord>;

export interface SkyRunOptions {
  signal?: AbortSignal | undefined;
  onLine?: ((line: string) => void) | undefined;
  timeoutMs?: number | undefined;
  /** Extra environment for this call only (the rest is the environment tpu-deploy runs in). */
  env?: NodeJS.ProcessEnv | undefined;
}

export interface SkyLaunchResult {
  outcome: LaunchOutcome | { kind: "cancelled"; requestId: string | undefined; reason: "interrupted" | "timeout" };
  argv: string[];
  output: string;
}

export interface Sky {
  launch(argv: string[], zone: string, opts: SkyRunOptions): Promise<SkyLaunchResult>;
  status(names: string[], opts?: { verbose?: boolean; refresh?: boolean; signal?: AbortSignal }): Promise<SkyClusterRecord[]>;
  down(name: string, opts?: { signal?: AbortSignal; onLine?: (l: string) => void }): Promise<{ exitCode: number; output: string }>;
  cancelRequest(id: string): Promise<{ exitCode: number; output: string }>;
  version(): Promise<{ ok: boolean; output: string }>;
}

export const SKY_TIMEOUTS = {
  statusMs: 120_000,
  downMs: 20 * 60_000,
  cancelMs: 60_000,
  infoMs: 60_000,
  /** Ctrl-C'd sky gets this long to print its request id before SIGKILL. */
  killGraceMs: 15_000,
} as const;

export function skyExecutable(env: NodeJS.ProcessEnv): string {
  return env.TPU_DEPLOY_SKY || "sky";
}

/**
 * `sky status -o json` prints the API server's log lines before the JSON: parse from the first line that
 * starts with `[`. No such line, or anything that is not a list of records, is an error, never "no
 * clusters": acting on a misread status could tear down what still serves.
 */
export function parseStatusJson(stdout: string): SkyClusterRecord[] {
  const lines = stdout.split("\n");
  const start = lines.findIndex((l) => l.startsWith("["));
  if (start < 0) throw new Error(`no JSON list in the output (${JSON.stringify(stdout.slice(0, 200))})`);
  const parsed = z.array(statusRecord).safeParse(JSON.parse(lines.slice(start).join("\n")));
  if (!parsed.success)
    throw new Error(`unexpected records: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  return parsed.data;
}

function notFound(exe: string): OperationError {
  return new OperationError("sky_not_found", `cannot run '${exe}': not found`, {
    hint: "install SkyPilot (pip install 'skypilot[gcp]') or point TPU_DEPLOY_SKY at the sky executable",
  });
}

export async function createSky(env: NodeJS.ProcessEnv): Promise<Sky> {
  const { execa } = await import("execa");
  const exe = skyExecutable(env);

  async function run(args: string[], opts: SkyRunOptions & { timeoutMs: number; killSignal?: "SIGINT" | "SIGTERM" }) {
    const child = execa(exe, args, {
      env: { ...env, ...opts.env },
      extendEnv: false,
      reject: false,
      all: true,
      stdin: "ignore",
      cancelSignal: opts.signal,
      killSignal: opts.killSignal ?? "SIGTERM",
      forceKillAfterDelay: SKY_TIMEOUTS.killGraceMs,
      timeout: opts.timeoutMs,
    });
    if (opts.onLine) {
      for await (const line of child.iterable({ from: "all" })) opts.onLine(line);
    }
    const r = await child;
    if (r.failed && (r as { code?: string }).code === "ENOENT") throw notFound(exe);
    return {
      exitCode: r.exitCode ?? 1,
      output: String(r.all ?? ""),
      stdout: String(r.stdout ?? ""),
      canceled: r.isCanceled,
      timedOut: r.timedOut,
    };
  }

  function timedOut(args: string[], ms: number, output: string): SkyError {
    return new SkyError("sky_failed", `sky ${args[0]} did not finish within ${Math.round(ms / 1000)} s`, {
      argv: args,
      outputTail: output.slice(-2000),
      hint: "the SkyPilot API server may be wedged: check `sky api info`, restart it with `sky api stop; sky api start`",
    });
  }

  return {
    async launch(argv, zone, opts) {
      // On Ctrl-C sky gets SIGINT: it then prints the id of its request, which keeps running on the API
      // server until `sky api cancel` (docs/upstream/skypilot.md §3).
      const r = await run(argv, { ...opts, killSignal: "SIGINT", timeoutMs: opts.timeoutMs ?? 0 });
      if (r.canceled || r.timedOut) {
        return {
          outcome: { kind: "cancelled", requestId: requestIdFrom(r.output), reason: r.canceled ? "interrupted" : "timeout" },
          argv,
          output: r.output,
        };
      }
      return { outcome: classifyLaunch(r.exitCode, r.output, zone), argv, output: r.output };
    },

    async status(names, opts = {}) {
      const args = ["status", ...(opts.verbose ? ["-v"] : []), ...(opts.refresh ? ["-r"] : []), "-o", "json", ...names];
      const r = await run(args, { signal: opts.signal, timeoutMs: SKY_TIMEOUTS.statusMs });
      if (r.timedOut) throw timedOut(args, SKY_TIMEOUTS.statusMs, r.output);
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
        throw new SkyError("sky_failed", `could not read \`sky ${args.join(" ")}\`: ${(cause as Error).message}`, {
          argv: args,
          outputTail: r.stdout.slice(-2000),
          cause,
          hint: "nothing was changed: the state of the cloud could not be read; check your SkyPilot version and `sky api info`",
        });
      }
    },

    async down(name, opts = {}) {
      const args = ["down", "-y", name];
      const r = await run(args, { signal: opts.signal, onLine: opts.onLine, timeoutMs: SKY_TIMEOUTS.downMs });
      if (r.timedOut) throw timedOut(args, SKY_TIMEOUTS.downMs, r.output);
      return { exitCode: r.exitCode, output: r.output };
    },

    async cancelRequest(id) {
      const args = ["api", "cancel", "-y", id];
      const r = await run(args, { timeoutMs: SKY_TIMEOUTS.cancelMs });
      if (r.timedOut) throw timedOut(args, SKY_TIMEOUTS.cancelMs, r.output);
      return { exitCode: r.exitCode, output: r.output };
    },

    async version() {
      const r = await run(["api", "info"], { timeoutMs: SKY_TIMEOUTS.infoMs });
      return { ok: r.exitCode === 0 && !r.timedOut, output: r.output };
    },
  };
}
