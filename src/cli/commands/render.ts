import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { planFor } from "../../app/up.js";
import type { SpecFlags } from "../config-flags.js";
import { appContext } from "../context.js";
import { loadSpec } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

/** The task of the plan's first zone, exactly as `up` would write it for `sky launch`. */
export async function renderCommand(
  opts: SpecFlags & { output?: string; json?: boolean },
  _args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const config = loadSpec(opts, run.io);
  const ctx = appContext(run, opts);
  const plan = planFor(ctx, config);
  for (const w of plan.warnings) ctx.report.warn(w);
  const first = plan.replicas[0]?.launches[0];
  if (!first) return { code: 0 };
  if (opts.output) {
    const path = resolve(run.io.cwd, opts.output);
    writeFileSync(path, first.taskYaml);
    return { code: 0, json: { path, task: first.task } };
  }
  if (opts.json) return { code: 0, json: { task: first.task, yaml: first.taskYaml } };
  run.io.stdout.write(first.taskYaml);
  return { code: 0 };
}
