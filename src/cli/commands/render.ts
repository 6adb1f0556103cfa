import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { renderTask } from "../../core/plan.js";
import { ConfigError } from "../../errors.js";
import type { SpecFlags } from "../config-flags.js";
import { makeReporter } from "../io.js";
import { loadSpec, loadTemplate } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

export default async function render(
  opts: SpecFlags & { output?: string; json?: boolean },
  _args: string[],
  ctx: RunContext,
): Promise<CommandResult> {
  const config = loadSpec(opts, ctx.io);
  const template = loadTemplate(config);
  const zone = config.tpu.zones[0] ?? "";
  const rendered = renderTask(config, template.text, template.name, zone);
  if (!rendered.ok) throw new ConfigError(rendered.errors.map((message) => ({ path: "template", message })));
  for (const w of config.warnings) makeReporter(ctx.io, opts).warn(w);
  if (opts.output) {
    writeFileSync(resolve(ctx.io.cwd, opts.output), rendered.yaml);
    return { code: 0, json: { path: resolve(ctx.io.cwd, opts.output), task: rendered.task } };
  }
  if (opts.json) return { code: 0, json: { task: rendered.task, yaml: rendered.yaml } };
  ctx.io.stdout.write(rendered.yaml);
  return { code: 0 };
}
