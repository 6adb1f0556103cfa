// Entry point used by bin/ and by in-process tests: never calls process.exit. Builds the dependencies
// once (or takes a test's), runs one command, closes what it opened.
import { realpathSync } from "node:fs";
import { type Deps, type DepsOptions, makeDeps } from "./app/deps.js";
import type { Io } from "./cli/io.js";
import { runProgram } from "./cli/program.js";

export type { Io } from "./cli/io.js";

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd(), stdin: process.stdin };
}

/** This process's node and the real path of the script it runs (a global install's bin is a symlink). */
export function runningSelf(): { node: string; bin: string } | undefined {
  const bin = process.argv[1];
  if (!bin) return undefined;
  try {
    return { node: process.execPath, bin: realpathSync(bin) };
  } catch {
    return undefined;
  }
}

export interface RunOptions extends DepsOptions {
  /** Replaces the real dependencies (tests). */
  deps?: Deps;
}

export async function run(
  argv: string[],
  io: Io = processIo(),
  signal: AbortSignal = new AbortController().signal,
  opts: RunOptions = {},
): Promise<number> {
  const deps = opts.deps ?? makeDeps(io.env, { ...opts, self: opts.self ?? runningSelf() });
  try {
    return await runProgram(argv, { io, signal, deps });
  } finally {
    await deps.close();
  }
}
