// Every SSH step (handshake, command, forward, HTTP request) runs through runStep, so none can hang a run
// or outlive Ctrl-C, and each cleans up after itself however it ends.
import { getEventListeners, getMaxListeners, setMaxListeners } from "node:events";
import { SshError, type SshStage } from "../../errors.js";

export interface StepLimits {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface StepControl<T> {
  resolve(value: T): void;
  reject(error: SshError): void;
  // Runs once when the step settles, however it settles (at once if it already has).
  onStop(fn: () => void): void;
  readonly settled: boolean;
}

// One deadline and one cancel for a callback-style operation; cleanups run before the promise settles.
export function runStep<T>(
  host: string,
  stage: SshStage,
  what: string,
  limits: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined },
  body: (step: StepControl<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const stops: (() => void)[] = [];
    let timer: NodeJS.Timeout | undefined;
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      limits.signal?.removeEventListener("abort", onAbort);
      for (const fn of stops.reverse()) {
        try {
          fn();
        } catch {
          // best effort: a cleanup failing must not hide the step's own outcome
        }
      }
      settle();
    };
    const onAbort = (): void => finish(() => reject(cancelled(host, stage, limits.signal?.reason)));
    const step: StepControl<T> = {
      resolve: (value) => finish(() => resolve(value)),
      reject: (error) => finish(() => reject(error)),
      onStop: (fn) => (settled ? fn() : void stops.push(fn)),
      get settled() {
        return settled;
      },
    };
    if (limits.signal?.aborted === true) {
      onAbort();
      return;
    }
    if (limits.signal !== undefined) {
      allowOneMoreAbortListener(limits.signal);
      limits.signal.addEventListener("abort", onAbort, { once: true });
    }
    if (limits.timeoutMs !== undefined) {
      const ms = limits.timeoutMs;
      timer = setTimeout(
        () =>
          finish(() =>
            reject(
              new SshError({
                host,
                stage: "timeout",
                message: `${what} timed out after ${ms} ms`,
                hint:
                  stage === "exec"
                    ? "The command was killed on the host; raise the timeout if it needs longer."
                    : "The host or the network is slow or drops packets; retry, or raise the timeout.",
              }),
            ),
          ),
        ms,
      );
    }
    try {
      body(step);
    } catch (err) {
      step.reject(
        err instanceof SshError
          ? err
          : new SshError({
              host,
              stage,
              cause: err,
              message: `${what} failed: ${errorMessage(err)}`,
              hint: "Retry; if it keeps failing, rerun with --verbose.",
            }),
      );
    }
  });
}

// Every host's steps share the run's one signal and each removes its listener when it settles, so
// dozens at once on a large slice are expected, not a leak; Node would warn from the 11th on.
function allowOneMoreAbortListener(signal: AbortSignal): void {
  const max = getMaxListeners(signal);
  const count = getEventListeners(signal, "abort").length;
  if (max !== 0 && count + 1 > max) setMaxListeners(count + 1, signal);
}

export function cancelled(host: string, stage: SshStage, cause: unknown): SshError {
  return new SshError({ host, stage, reason: "cancelled", cause, message: "cancelled", hint: "The run was interrupted." });
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
