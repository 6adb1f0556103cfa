// One error hierarchy; exit codes are mapped here and nowhere else.

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  partial: 3,
  gaveUp: 4,
  interrupted: 130,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Every `error.code` that `--json` can report. Documented in the README. */
export const ERROR_CODES = [
  "usage", // bad flags or arguments
  "config_invalid", // the config failed validation
  "config_conflict", // two sources disagree
  "secret_missing", // a secret could not be resolved
  "sky_failed", // sky exited non-zero for a reason not listed below
  "sky_not_found", // the sky executable is missing
  "capacity", // no zone had capacity
  "quota", // quota exhausted everywhere we may try
  "setup_failed", // the task's setup or run failed (sky exit 100)
  "invalid_task", // SkyPilot rejected the task
  "launch_timeout", // the job stayed pending too long
  "hosts_mismatch", // the hosts found do not match the plan
  "ssh_failed", // SSH to a host failed
  "port_blocked", // a rendezvous port is not reachable between hosts
  "server_crashed", // a rank's server exited
  "readiness_timeout", // the cluster did not serve in time
  "cloud_api", // the Cloud TPU API failed
  "locked", // another run holds the deployment's lock (LockedError; `stuck` when it is past its deadline)
  "not_found", // no such deployment
  "not_owner", // the cluster belongs to another tpu-deploy installation (--force takes it over)
  "state_corrupt", // a state file was damaged outside tpu-deploy
  "not_verified", // teardown could not be verified
  "partial", // some targets failed
  "gave_up", // relaunch attempts exhausted
  "checks_failed", // doctor found problems
  "interrupted", // Ctrl-C or SIGTERM
  "internal", // a bug in tpu-deploy
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ErrorDetails {
  hint?: string;
  cause?: unknown;
}

export class TpuDeployError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, exitCode: ExitCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.hint = details.hint;
  }
}

export class UsageError extends TpuDeployError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("usage", EXIT.usage, message, details);
  }
}

export interface ConfigIssue {
  path: string;
  message: string;
}

export class ConfigError extends TpuDeployError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[], details: ErrorDetails & { code?: ErrorCode } = {}) {
    const lines = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
    const head = issues.length === 1 ? "invalid configuration" : `invalid configuration (${issues.length} problems)`;
    super(details.code ?? "config_invalid", EXIT.usage, `${head}:\n  ${lines.join("\n  ")}`, details);
    this.issues = issues;
  }
}

export class OperationError extends TpuDeployError {
  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, EXIT.failed, message, details);
  }
}

/** Who holds a deployment's lock, as its lock file says. */
export interface LockHolder {
  pid: number;
  host: string;
  command: string;
  startedAt: string;
  deadline?: string | undefined;
}

/**
 * Another run holds the deployment's lock (code "locked"). `stuck`: that run is alive but more than 5 min
 * past the deadline it wrote, so it will likely never let go; relaunch reports it (exit 1) instead of "busy".
 */
export class LockedError extends OperationError {
  readonly holder: LockHolder | undefined;
  readonly stuck: boolean;
  constructor(message: string, info: ErrorDetails & { holder?: LockHolder | undefined; stuck?: boolean } = {}) {
    super("locked", message, info);
    this.holder = info.holder;
    this.stuck = info.stuck ?? false;
  }
}

export class SkyError extends TpuDeployError {
  readonly argv: readonly string[];
  readonly skyExitCode: number | undefined;
  readonly outputTail: string;
  constructor(code: ErrorCode, message: string, info: { argv: readonly string[]; exitCode?: number; outputTail?: string } & ErrorDetails) {
    super(code, EXIT.failed, message, info);
    this.argv = info.argv;
    this.skyExitCode = info.exitCode;
    this.outputTail = info.outputTail ?? "";
  }
}

export type SshStage = "connect" | "auth" | "exec" | "forward" | "timeout";
// Why a step failed, when the caller must tell cases apart (a refused forward means "still starting";
// host-key: the host offered a key other than the pinned one, and nothing was sent to it).
export type SshFailure = "refused" | "unreachable" | "prohibited" | "lost" | "cancelled" | "host-key";

// A step cancelled by the run's signal is an interruption (exit 130), not an SSH failure.
export class SshError extends TpuDeployError {
  readonly host: string;
  readonly stage: SshStage;
  override readonly hint: string;
  readonly reason: SshFailure | undefined;

  constructor(init: { host: string; stage: SshStage; message: string; hint: string; reason?: SshFailure; cause?: unknown }) {
    super(
      init.reason === "cancelled" ? "interrupted" : "ssh_failed",
      init.reason === "cancelled" ? EXIT.interrupted : EXIT.failed,
      `${init.host}: ${init.message}`,
      {
        hint: init.hint,
        cause: init.cause,
      },
    );
    this.name = "SshError";
    this.host = init.host;
    this.stage = init.stage;
    this.hint = init.hint;
    this.reason = init.reason;
  }
}

export class CloudApiError extends TpuDeployError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("cloud_api", EXIT.failed, message, details);
  }
}

export interface TargetResult {
  target: string;
  ok: boolean;
  message?: string;
}

export class PartialFailureError extends TpuDeployError {
  readonly results: TargetResult[];
  constructor(message: string, results: TargetResult[], details: ErrorDetails = {}) {
    super("partial", EXIT.partial, message, details);
    this.results = results;
  }
}

export class GaveUpError extends TpuDeployError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("gave_up", EXIT.gaveUp, message, details);
  }
}

export class InterruptedError extends TpuDeployError {
  constructor(message = "interrupted", details: ErrorDetails = {}) {
    super("interrupted", EXIT.interrupted, message, details);
  }
}

export class InternalError extends TpuDeployError {
  constructor(message: string, details: ErrorDetails = {}) {
    super("internal", EXIT.failed, message, {
      hint: details.hint ?? "This is a bug in tpu-deploy; please report it with the output of --verbose.",
      cause: details.cause,
    });
  }
}

/** Turns anything thrown into a TpuDeployError, keeping the original as `cause`. */
export function toTpuDeployError(err: unknown): TpuDeployError {
  if (err instanceof TpuDeployError) return err;
  if (err instanceof Error && err.name === "AbortError") return new InterruptedError("interrupted", { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(message, { cause: err });
}
