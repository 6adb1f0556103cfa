// The ways a sky invocation ends, mirroring what click and SkyPilot print and return.

// A SkyPilot exception shown without traceback (ux_utils.print_exception_no_traceback): stderr gets
// "<python class>: <message>" and the exit code is 1.
export class SkyException extends Error {
  constructor(
    readonly pyClass: string,
    message: string,
  ) {
    super(message);
  }
}

export const exc = {
  value: (msg: string) => new SkyException("ValueError", msg),
  runtime: (msg: string) => new SkyException("RuntimeError", msg),
  resourcesUnavailable: (msg: string) => new SkyException("sky.exceptions.ResourcesUnavailableError", msg),
  clusterDoesNotExist: (msg: string) => new SkyException("sky.exceptions.ClusterDoesNotExist", msg),
  clusterNotUp: (msg: string) => new SkyException("sky.exceptions.ClusterNotUpError", msg),
  invalidConfig: (msg: string) => new SkyException("sky.exceptions.InvalidSkyPilotConfigError", msg),
  invalidClusterName: (msg: string) => new SkyException("sky.exceptions.InvalidClusterNameError", msg),
  notSupported: (msg: string) => new SkyException("sky.exceptions.NotSupportedError", msg),
  resourcesMismatch: (msg: string) => new SkyException("sky.exceptions.ResourcesMismatchError", msg),
  requestCancelled: (msg: string) => new SkyException("sky.exceptions.RequestCancelledByUserError", msg),
  command: (msg: string) => new SkyException("sky.exceptions.CommandError", msg),
};

// click.UsageError (and its subclasses): usage line, hint, blank line, "Error: <message>", exit 2.
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string | null,
    readonly helpHint: string | null,
  ) {
    super(message);
  }
}

// click.Abort: "Aborted!" on stderr, exit 1. `newline` reproduces the blank line click prints first
// when the abort came from Ctrl-C or EOF at the top level.
export class Abort extends Error {
  constructor(readonly newline = false) {
    super("Aborted!");
  }
}

// sys.exit(code) after whatever was printed.
export class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
