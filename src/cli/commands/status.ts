import { requireState } from "../../app/hosts.js";
import { statusOf } from "../../app/status.js";
import { formatDuration } from "../../core/duration.js";
import { EXIT } from "../../errors.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function statusCommand(opts: OutputFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const ctx = appContext(run, opts);
  try {
    const names = args.length > 0 ? args : ctx.store.list();
    const states = names.map((n) => requireState(ctx, n));
    const deployments = await statusOf(ctx, states);
    if (!opts.json) {
      const out = run.io.stdout;
      if (deployments.length === 0) out.write("no deployments (tpu-deploy up creates one)\n");
      for (const d of deployments) {
        const many = d.replicas.length > 1;
        const up = !many && d.uptimeSeconds !== null ? `, up ${formatDuration(d.uptimeSeconds * 1000)}` : "";
        out.write(`${d.name}: ${d.health}${up} — ${many ? `${d.summary}; ` : ""}${d.layout}${d.spot ? ", spot" : ""}\n`);
        for (const r of d.replicas) {
          const since = r.since ? ` since ${r.since}` : "";
          out.write(
            `  ${many ? `replica ${r.replica} ` : ""}${r.cluster}: ${r.status}${since} in ${r.zone ?? "?"}, cluster ${r.sky.status ?? "gone"}${r.sky.initKind ? ` (${r.sky.initKind}${r.sky.initReason ? `: ${r.sky.initReason}` : ""})` : ""}, phase ${r.phase}\n`,
          );
          if (r.legacyLayout) out.write(`    made as ${r.legacyLayout}: tpu-deploy up --recreate replaces it\n`);
          if (r.tpuNodes) for (const n of r.tpuNodes) out.write(`    tpu node ${n.name.split("/").at(-1)}: ${n.state}\n`);
          for (const h of r.hosts)
            out.write(`    rank ${String(h.rank).padEnd(3)} ${h.sshHost.padEnd(24)} ${h.internalIp.padEnd(15)} ${h.process}\n`);
          if (r.lastError) out.write(`    last error (${r.lastError.code}): ${r.lastError.message.split("\n")[0]}\n`);
          if (r.hostKeysChanged) out.write(`    not contacted: ${r.hostKeysChanged.message.split("\n").join("\n    ")}\n`);
        }
        if (d.preemptions || d.relaunches) out.write(`  preemptions ${d.preemptions}, relaunches ${d.relaunches}\n`);
        for (const e of d.history.slice(-5))
          out.write(
            `  ${e.at}  ${e.event}${e.replica !== undefined && many ? ` replica ${e.replica}` : ""}${e.zone ? ` ${e.zone}` : ""}${e.durationMs ? ` (${formatDuration(e.durationMs)})` : ""}${e.detail ? `: ${e.detail.split("\n")[0]}` : ""}\n`,
          );
      }
    }
    // A host that fails its key check makes status fail: the user must see it even from a script.
    const changed = deployments.flatMap((d) => (d.hostKeysChanged ? [{ name: d.name, ...d.hostKeysChanged }] : []));
    const first = changed[0];
    if (first) {
      const message = changed.map((c) => (deployments.length > 1 ? `${c.name}: ${c.message}` : c.message)).join("\n");
      if (!opts.json) {
        run.io.stderr.write(`tpu-deploy status: ${message}\n`);
        if (first.hint) run.io.stderr.write(`  hint: ${first.hint}\n`);
      }
      return { code: EXIT.failed, json: { code: first.code, message, ...(first.hint ? { hint: first.hint } : {}), deployments } };
    }
    return { code: 0, json: { deployments } };
  } finally {
    ctx.report.stop();
  }
}
