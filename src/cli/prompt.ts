// Confirmation for destructive commands: -y skips it; without a TTY it is a usage error, never a hang.
import { createInterface } from "node:readline/promises";
import type { Prompt } from "../app/context.js";
import { InterruptedError, UsageError } from "../errors.js";
import type { Io } from "./io.js";

export function ttyPrompt(io: Io): Prompt {
  return { confirm: (question, yes) => confirm(io, question, yes) };
}

export async function confirm(io: Io, question: string, yes: boolean): Promise<void> {
  if (yes) return;
  if (!io.stdin?.isTTY) {
    throw new UsageError(`${question} Refusing without -y: there is no terminal to ask`, { hint: "pass -y to confirm" });
  }
  const rl = createInterface({ input: io.stdin, output: io.stderr as NodeJS.WritableStream });
  try {
    const answer = (await rl.question(`${question} [y/N] `)).trim().toLowerCase();
    if (answer !== "y" && answer !== "yes") throw new InterruptedError("not confirmed");
  } finally {
    rl.close();
  }
}
