// Runs the CLI in-process through `run(argv, io)` from src/main.ts, with captured stdout/stderr,
// a fresh temp cwd and an environment whose TPU_DEPLOY_HOME and HOME live in a temp dir.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { run } from "../../src/main.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The temp directory the command ran in. */
  cwd: string;
  /** TPU_DEPLOY_HOME of the run. */
  home: string;
}

export interface CliOptions {
  /** Files to create first, relative to the temp cwd. */
  files?: Record<string, string>;
  /** Extra environment (merged over the clean default). */
  env?: Record<string, string>;
  /** Run in this directory instead of a fresh one. */
  cwd?: string;
  /** The node and tpu-deploy bin the run takes for its own (default: this process's). */
  self?: { node: string; bin: string };
}

export function makeTempDir(prefix = "tpu-deploy-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function runCli(argv: string[], options: CliOptions = {}): Promise<CliResult> {
  const cwd = options.cwd ?? makeTempDir();
  for (const [rel, text] of Object.entries(options.files ?? {})) {
    const path = join(cwd, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
  const home = join(makeTempDir("tpu-deploy-home-"), "state");
  let stdout = "";
  let stderr = "";
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dirname(home),
    TPU_DEPLOY_HOME: home,
    ...options.env,
  };
  const code = await run(
    argv,
    {
      stdout: { write: (s: string) => (stdout += s), isTTY: false },
      stderr: { write: (s: string) => (stderr += s), isTTY: false },
      env,
      cwd,
    },
    undefined,
    options.self ? { self: options.self } : {},
  );
  return { code, stdout, stderr, cwd, home };
}

/** The plan `up --dry-run --json` prints, as far as these tests read it. */
export interface PlanDoc {
  layout: string;
  plan: {
    layout: string;
    replicas: {
      replica: number;
      cluster: string;
      launches: { zone: string; task: Record<string, unknown> & { resources: Record<string, unknown> }; skyArgv: string[] }[];
      ranks: { rank: number; workerId: number; host: string; argv: string[] }[];
    }[];
  };
}

/** The first replica's first launch and its ranks: what `up` runs first. */
export function firstLaunch(doc: PlanDoc) {
  const r = doc.plan.replicas[0];
  const l = r?.launches[0];
  if (!r || !l) throw new Error("the plan has no launch");
  return { task: l.task, skyArgv: ["sky", ...l.skyArgv], ranks: r.ranks };
}
