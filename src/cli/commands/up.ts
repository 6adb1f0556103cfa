import { planDeploy } from "../../core/plan.js";
import { taskPath } from "../../core/paths.js";
import { shellJoin } from "../../core/quote.js";
import { ConfigError } from "../../errors.js";
import type { SpecFlags } from "../config-flags.js";
import { makeReporter, type OutputFlags } from "../io.js";
import { loadSpec, loadTemplate } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

export type UpFlags = SpecFlags &
  OutputFlags & { dryRun?: boolean; timeout?: string; recreate?: boolean; keepOnFailure?: boolean; yes?: boolean };

export default async function up(opts: UpFlags, args: string[], ctx: RunContext): Promise<CommandResult> {
  const config = loadSpec(opts, ctx.io);
  const template = loadTemplate(config);
  const planned = planDeploy(config, template.text, template.name, taskPath(ctx.io.env, config.name));
  if (!planned.ok) throw new ConfigError(planned.errors.map((message) => ({ path: "template", message })));
  const plan = planned.plan;
  const report = makeReporter(ctx.io, opts);
  for (const w of plan.warnings) report.warn(w);
  if (opts.dryRun) {
    const result = {
      dryRun: true,
      name: plan.name,
      accelerator: config.tpu.accelerator,
      hosts: config.topology.hosts,
      tpSize: config.server.tpSize,
      zones: plan.zones,
      warnings: plan.warnings,
      task: plan.task,
      skyArgv: ["sky", ...plan.skyArgv],
      ranks: plan.ranks.map((r) => ({
        rank: r.rank,
        slice: r.slice,
        workerId: r.workerId,
        host: r.host,
        argv: r.server.argv,
        command: r.server.command,
      })),
    };
    if (!opts.json) {
      const out = ctx.io.stdout;
      out.write(
        `# ${plan.name}: ${config.topology.slices} x ${config.tpu.accelerator} = ${config.topology.hosts} host(s), tp-size ${config.server.tpSize}, ${config.tpu.spot ? "spot" : "on-demand"}\n`,
      );
      out.write(`# --- sky.yaml (${template.name}) ---\n${plan.taskYaml}`);
      out.write(`# --- sky launch, first zone of ${plan.zones.join(", ")} ---\n${shellJoin(["sky", ...plan.skyArgv])}\n`);
      out.write(`# --- ranks: rank = slice offset + TPU worker number; --dist-init-addr = rank 0's internal IPv4 ---\n`);
      for (const r of plan.ranks) out.write(`rank ${r.rank}  slice ${r.slice} worker ${r.workerId}  ${r.host}\n  ${r.server.command}\n`);
    }
    return { code: 0, json: result };
  }
  const { runUp } = await import("../../app/up.js");
  return runUp(config, plan, template, opts, args, ctx);
}
