// Where output goes: results on stdout, progress and logs on stderr, `--json` as one versioned document.
import type { Reporter } from "../app/context.js";
import { EXIT, type TpuDeployError, toTpuDeployError } from "../errors.js";

export interface Io {
  stdout: { write(s: string): unknown; isTTY?: boolean };
  stderr: { write(s: string): unknown; isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdin for prompts; undefined when there is none (CI, cron). */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
}

export interface OutputFlags {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

export const JSON_VERSION = 1;

export function writeJson(io: Io, command: string, payload: { ok: true; result: unknown } | { ok: false; error: unknown }): void {
  io.stdout.write(`${JSON.stringify({ version: JSON_VERSION, command, ...payload }, null, 2)}\n`);
}

/** The user-facing rendering of a failure: what failed, why, what to do. No stack unless verbose or a bug. */
export function reportError(io: Io, command: string, err: unknown, flags: OutputFlags): number {
  const e: TpuDeployError = toTpuDeployError(err);
  if (flags.json) {
    writeJson(io, command, {
      ok: false,
      error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) },
    });
  }
  if (!flags.json || flags.verbose) {
    io.stderr.write(`tpu-deploy ${command}: ${e.message}\n`);
    if (e.hint) io.stderr.write(`  hint: ${e.hint}\n`);
    if (flags.verbose || e.code === "internal") {
      io.stderr.write(`${e.stack ?? ""}\n`);
      if (e.cause instanceof Error && e.cause.stack) io.stderr.write(`caused by: ${e.cause.stack}\n`);
    }
  }
  return e.exitCode ?? EXIT.failed;
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** The app's Reporter on stderr: silent under --quiet and --json, a spinner only on a TTY. */
export function makeReporter(io: Io, flags: OutputFlags): Reporter {
  const quiet = Boolean(flags.quiet || flags.json);
  // Spinners only on a terminal, and never with --json or --quiet.
  const tty = !quiet && io.stderr.isTTY === true;
  let spinner: { msg: string; since: number; frame: number; timer: NodeJS.Timeout } | undefined;
  const clear = () => {
    if (spinner) io.stderr.write("\r\x1b[K");
  };
  const draw = () => {
    if (!spinner) return;
    const secs = Math.floor((Date.now() - spinner.since) / 1000);
    io.stderr.write(`\r\x1b[K${FRAMES[spinner.frame % FRAMES.length]} ${spinner.msg} ${secs}s`);
    spinner.frame += 1;
  };
  const line = (text: string) => {
    clear();
    io.stderr.write(`${text}\n`);
    draw();
  };
  const stop = () => {
    if (!spinner) return;
    clearInterval(spinner.timer);
    clear();
    spinner = undefined;
  };
  return {
    info: (m) => {
      if (!quiet) line(m);
    },
    warn: (m) => {
      if (!flags.json) line(`warning: ${m}`);
    },
    debug: (m) => {
      if (flags.verbose && !flags.json) line(`debug: ${m}`);
    },
    phase: (m) => {
      if (quiet) return;
      stop();
      io.stderr.write(`${m}\n`);
      if (!tty) return;
      const timer = setInterval(draw, 100);
      timer.unref();
      spinner = { msg: m.replace(/^\[[^\]]*\]\s*/, ""), since: Date.now(), frame: 0, timer };
      draw();
    },
    stop,
  };
}
