// The dependencies a use case gets, built once per command run. Heavy adapters load on first use.
import { homedir } from "node:os";
import { createScheduler, type Scheduler } from "../adapters/scheduler.js";
import type { Sky } from "../adapters/sky.js";
import { StateStore } from "../adapters/state-store.js";
import type { TpuApi } from "../adapters/tpu-api.js";
import { type Io, makeReporter, type OutputFlags, type Reporter } from "../cli/io.js";
import { InterruptedError, TpuDeployError } from "../errors.js";

export interface AppContext {
  io: Io;
  env: NodeJS.ProcessEnv;
  home: string;
  signal: AbortSignal;
  flags: OutputFlags;
  report: Reporter;
  store: StateStore;
  now(): Date;
  sky(): Promise<Sky>;
  /** The Cloud TPU API client; created once, closed by close(). */
  tpuApi(): Promise<TpuApi>;
  /** crontab, systemctl and the systemd unit files, for `schedule`. */
  scheduler(): Scheduler;
  close(): Promise<void>;
}

export function makeContext(io: Io, signal: AbortSignal, flags: OutputFlags, now: () => Date = () => new Date()): AppContext {
  let sky: Promise<Sky> | undefined;
  let api: Promise<TpuApi> | undefined;
  let scheduler: Scheduler | undefined;
  const report = makeReporter(io, flags);
  return {
    io,
    env: io.env,
    home: io.env.HOME || homedir(),
    signal,
    flags,
    report,
    store: new StateStore(io.env),
    now,
    sky: () => {
      sky ??= import("../adapters/sky.js").then((m) => m.createSky());
      return sky;
    },
    tpuApi: () => {
      api ??= import("../adapters/tpu-api.js").then((m) => m.createTpuApi(io.env));
      return api;
    },
    scheduler: () => {
      scheduler ??= createScheduler(io.env);
      return scheduler;
    },
    close: async () => {
      report.stop();
      if (api) {
        try {
          await (await api).close();
        } catch {
          // closing a client that never connected can reject (tpu.md P8)
        }
      }
    },
  };
}

export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw interruptedFrom(signal);
}

export function interruptedFrom(signal: AbortSignal): TpuDeployError {
  const reason: unknown = signal.reason;
  if (reason instanceof TpuDeployError) return reason;
  return new InterruptedError("interrupted", { hint: "run the same command again to continue", cause: reason });
}

/** Runs fn over items with at most `limit` at once; results in input order, every item settled. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      const item = items[i] as T;
      try {
        out[i] = { status: "fulfilled", value: await fn(item, i) };
      } catch (reason) {
        out[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(interruptedFrom(signal));
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal ? interruptedFrom(signal) : new InterruptedError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
