import { accessSync, constants, mkdirSync } from "node:fs";
import { makeContext } from "../../app/context.js";
import { resolveSecrets } from "../../adapters/secrets.js";
import { stateHome } from "../../core/paths.js";
import { V6E_CATALOG_ZONES } from "../../core/topology.js";
import type { Config } from "../../core/config.js";
import type { SpecFlags } from "../config-flags.js";
import type { OutputFlags } from "../io.js";
import { loadSpec } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

export default async function doctor(opts: SpecFlags & OutputFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const ctx = makeContext(run.io, run.signal, opts, run.now);
  const checks: Check[] = [];
  const add = (check: string, ok: boolean, detail: string) => {
    checks.push({ check, ok, detail });
    if (!opts.json) run.io.stdout.write(`${ok ? "ok  " : "FAIL"}  ${check}: ${detail}\n`);
  };
  try {
    const stored = args[0] ? ctx.store.read(args[0]) : undefined;
    const config: Config = stored?.config ?? loadSpec(opts, run.io);
    // 1. sky and its API server
    const sky = await ctx.sky();
    try {
      const v = await sky.version({ env: ctx.env });
      add(
        "sky",
        v.ok,
        v.ok
          ? "the SkyPilot API server answers (sky api info)"
          : `sky api info failed: ${v.output.trim().split("\n").at(-1)}; start it with sky api start`,
      );
    } catch (err) {
      add("sky", false, `${(err as Error).message}`);
    }
    // 2. the accelerator in each zone
    for (const zone of config.tpu.zones) {
      if (config.tpu.generation === "v6e") {
        const inCatalog = V6E_CATALOG_ZONES.includes(zone);
        let apiNote = "";
        let apiOk = true;
        if (config.tpu.project) {
          try {
            const types = await (await ctx.tpuApi()).listAcceleratorTypes(config.tpu.project, zone);
            apiOk = types.includes(config.tpu.accelerator);
            apiNote = apiOk
              ? "; the Cloud TPU API offers it"
              : `; the Cloud TPU API does not offer it there (offers ${types.slice(0, 8).join(", ") || "nothing"})`;
          } catch (err) {
            apiNote = `; Cloud TPU API not checked (${(err as Error).message.split("\n")[0]})`;
          }
        }
        add(
          `${config.tpu.accelerator} in ${zone}`,
          inCatalog && apiOk,
          inCatalog
            ? `in SkyPilot's catalog${apiNote}`
            : `not in SkyPilot's catalog (v6e zones: ${V6E_CATALOG_ZONES.join(", ")})${apiNote}`,
        );
      } else {
        add(
          `${config.tpu.accelerator} in ${zone}`,
          true,
          "TPU7x needs a TPU7x-capable SkyPilot build (instance type tpu7x-standard-4t); the Cloud TPU API does not serve it",
        );
      }
    }
    // 3. secrets
    try {
      resolveSecrets(config, ctx.env);
      add("secrets", true, config.server.secrets.length > 0 ? `${config.server.secrets.join(", ")} resolvable` : "none needed");
    } catch (err) {
      add("secrets", false, (err as Error).message.replace(/\n\s*/g, " "));
    }
    // 4. the state directory
    const home = stateHome(ctx.env);
    try {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      accessSync(home, constants.W_OK);
      add("state directory", true, `${home} is writable`);
    } catch (err) {
      add("state directory", false, `${home}: ${(err as Error).message}; set TPU_DEPLOY_HOME to a writable directory`);
    }
    const ok = checks.every((c) => c.ok);
    if (ok) return { code: 0, json: { ok, checks } };
    const failed = checks.filter((c) => !c.ok).map((c) => c.check);
    return {
      code: 1,
      json: {
        code: "checks_failed",
        message: `${failed.length} check(s) failed: ${failed.join(", ")}`,
        hint: "each failed line says what to do",
        ok,
        checks,
      },
    };
  } finally {
    await ctx.close();
  }
}
