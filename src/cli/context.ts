// The app's context for one command: the run's dependencies and signal, with this command's reporter
// (per --json/--quiet/--verbose) and the terminal prompt.
import type { AppContext } from "../app/context.js";
import { makeReporter, type OutputFlags } from "./io.js";
import type { RunContext } from "./program.js";
import { ttyPrompt } from "./prompt.js";

export function appContext(run: RunContext, flags: OutputFlags): AppContext {
  return { ...run.deps, signal: run.signal, report: makeReporter(run.io, flags), prompt: ttyPrompt(run.io) };
}
