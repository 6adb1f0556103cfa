// Entry point used by bin/ and by in-process tests: never calls process.exit.
import type { Io } from "./cli/io.js";
import { runProgram } from "./cli/program.js";

export type { Io } from "./cli/io.js";

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd(), stdin: process.stdin };
}

export async function run(
  argv: string[],
  io: Io = processIo(),
  signal: AbortSignal = new AbortController().signal,
  opts: { now?: () => Date } = {},
): Promise<number> {
  return runProgram(argv, { io, signal, ...(opts.now ? { now: opts.now } : {}) });
}
