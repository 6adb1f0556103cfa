import { EXIT } from "../../errors.js";
import { runChecks } from "../../app/doctor.js";
import { requireState } from "../../app/hosts.js";
import type { SpecFlags } from "../config-flags.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import { loadSpec } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

export async function doctorCommand(opts: SpecFlags & OutputFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const ctx = appContext(run, opts);
  // An empty name given on purpose (`doctor "$NAME"` with NAME unset) is refused, not read as "no name".
  const config = args[0] !== undefined ? requireState(ctx, args[0]).config : loadSpec(opts, run.io);
  const checks = await runChecks(ctx, config, (c) => {
    if (!opts.json) run.io.stdout.write(`${c.ok ? "ok  " : "FAIL"}  ${c.check}: ${c.detail}\n`);
  });
  const ok = checks.every((c) => c.ok);
  if (ok) return { code: 0, json: { ok, checks } };
  const failed = checks.filter((c) => !c.ok).map((c) => c.check);
  return {
    code: EXIT.failed,
    json: {
      code: "checks_failed",
      message: `${failed.length} check(s) failed: ${failed.join(", ")}`,
      hint: "each failed line says what to do",
      ok,
      checks,
    },
  };
}
