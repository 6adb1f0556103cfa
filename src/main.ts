// Entry point used by bin/ and by in-process tests: never calls process.exit. Builds the dependencies
// once (or takes a test's), runs one command, closes what it opened.
import { realpathSync } from "node:fs";
import type { Deps, DepsOptions } from "./app/deps.js";
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
  // Built when a command runs, not before: the state store's schemas load zod, which --help and --version
  // do not need (their start-up is measured against bare node in bench/startup.ts).
  let deps = opts.deps;
  const ctx = {
    io,
    signal,
    get deps(): Deps {
      if (!deps) throw new Error("internal: the dependencies are used before a command runs");
      return deps;
    },
    prepare: async () => {
      if (deps) return;
      const { makeDeps } = await import("./app/deps.js");
      deps = makeDeps(io.env, { ...opts, self: opts.self ?? runningSelf() });
    },
  };
  try {
    return await runProgram(argv, ctx);
  } finally {
    await deps?.close();
  }
}
