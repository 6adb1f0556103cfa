// Entry point used by bin/ and by in-process tests: never calls process.exit.
import { realpathSync } from "node:fs";
import type { Io } from "./cli/io.js";
import { type RunContext, runProgram } from "./cli/program.js";

export type { Io } from "./cli/io.js";

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd(), stdin: process.stdin };
}

/** This process's node and the real path of the script it runs (a global install's bin is a symlink). */
export function runningSelf(): RunContext["self"] {
  const bin = process.argv[1];
  if (!bin) return undefined;
  try {
    return { node: process.execPath, bin: realpathSync(bin) };
  } catch {
    return undefined;
  }
}

export async function run(
  argv: string[],
  io: Io = processIo(),
  signal: AbortSignal = new AbortController().signal,
  opts: Pick<RunContext, "now" | "self"> = {},
): Promise<number> {
  const self = opts.self ?? runningSelf();
  return runProgram(argv, { io, signal, ...(opts.now ? { now: opts.now } : {}), ...(self ? { self } : {}) });
}
