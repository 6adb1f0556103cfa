import { configJsonSchema } from "../../core/config.js";
import type { CommandResult, RunContext } from "../program.js";

export async function schemaCommand(opts: { json?: boolean }, _args: string[], ctx: RunContext): Promise<CommandResult> {
  const s = configJsonSchema();
  if (opts.json) return { code: 0, json: s };
  ctx.io.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
  return { code: 0 };
}
