// What a use case receives: the dependencies (built once in main.ts, or by a test), plus the run's signal,
// the progress reporter and the prompt. Use cases know no flags and no terminal: the CLI implements
// Reporter and Prompt and hands them in.
import { setTimeout as delay } from "node:timers/promises";
import pLimit from "p-limit";
import { InterruptedError, TpuDeployError } from "../errors.js";
import type { Deps } from "./deps.js";

/** Progress lines for people (stderr in the CLI); silent under --quiet and --json. */
export interface Reporter {
  info(msg: string): void;
  warn(msg: string): void;
  debug(msg: string): void;
  /** A phase of a long wait: one line, and on a TTY a spinner with the phase's elapsed time until the next. */
  phase(msg: string): void;
  /** Ends the spinner (if any) and leaves the terminal line clean. */
  stop(): void;
}

/** Confirmation for destructive actions; rejects (UsageError without a terminal, InterruptedError on "no"). */
export interface Prompt {
  confirm(question: string, yes: boolean): Promise<void>;
}

export interface AppContext extends Deps {
  signal: AbortSignal;
  report: Reporter;
  prompt: Prompt;
}

export const silentReporter: Reporter = {
  info: () => undefined,
  warn: () => undefined,
  debug: () => undefined,
  phase: () => undefined,
  stop: () => undefined,
};

/** The same context with another signal (a timeout, or a fresh one for cleanup after Ctrl-C). */
export function withSignal(ctx: AppContext, signal: AbortSignal): AppContext {
  return { ...ctx, signal };
}

export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw interruptedFrom(signal);
}

export function interruptedFrom(signal: AbortSignal): TpuDeployError {
  const reason: unknown = signal.reason;
  if (reason instanceof TpuDeployError) return reason;
  return new InterruptedError("interrupted", { hint: "run the same command again to continue", cause: reason });
}

/** Sleeps; an aborted signal ends it with the run's InterruptedError. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : undefined);
  } catch (err) {
    if (signal?.aborted) throw interruptedFrom(signal);
    throw err;
  }
}

/** Runs fn over items, at most `concurrency` at once; every item settles, results in input order. */
export async function settleEach<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const limit = pLimit(Math.max(1, concurrency));
  return await Promise.allSettled(items.map((item, i) => limit(() => fn(item, i))));
}
