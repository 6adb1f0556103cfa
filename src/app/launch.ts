// `sky launch` with zone failover: one zone per attempt, in the configured order. Capacity and quota move
// on (after `sky down` of the half-made cluster); anything else stops with what to do.
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../core/config.js";
import { renderTask, skyLaunchArgv } from "../core/plan.js";
import type { LaunchOutcome } from "../core/sky-outcome.js";
import { addEvent, type DeploymentState } from "../core/state.js";
import { regionOf } from "../core/topology.js";
import { ConfigError, OperationError, SkyError } from "../errors.js";
import { writeFileAtomic } from "../adapters/state-store.js";
import { type AppContext, interruptedFrom } from "./context.js";
import { teardownCluster } from "./teardown.js";

export interface LaunchRequest {
  config: Config;
  template: { text: string; name: string };
  secrets: Map<string, string>;
  spot: boolean;
  /** zone or region → until when it is blocked (ISO); respected and extended. */
  blocked: Record<string, string>;
  launchTimeoutMs: number;
  /** Called once per attempt when the hosts exist and SkyPilot starts the task's setup. */
  onSetup?: (zone: string) => void;
}

export interface ZoneAttempt {
  zone: string;
  outcome: LaunchOutcome["kind"] | "cancelled" | "skipped";
  message?: string;
}

export type LaunchResult =
  | { ok: true; zone: string; attempts: ZoneAttempt[]; ms: number }
  | { ok: false; attempts: ZoneAttempt[]; kind: "capacity" | "quota" };

function isBlocked(blocked: Record<string, string>, zone: string, now: Date): boolean {
  return [zone, regionOf(zone)].some((k) => {
    const until = blocked[k];
    return until !== undefined && new Date(until) > now;
  });
}

export async function launchWithFailover(
  ctx: AppContext,
  req: LaunchRequest,
  state: DeploymentState,
  save: (s: DeploymentState) => DeploymentState,
): Promise<{ result: LaunchResult; state: DeploymentState }> {
  const { config } = req;
  const sky = await ctx.sky();
  const dir = ctx.store.dir(config.name);
  const taskFile = join(dir, "sky.yaml");
  const logFile = join(dir, "sky-launch.log");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // SkyPilot reads bare `--secret NAME` values from its own environment.
  const env = { ...ctx.env, ...Object.fromEntries(req.secrets) };
  const attempts: ZoneAttempt[] = [];
  let sawQuota = false;
  const started = Date.now();
  for (const zone of config.tpu.zones) {
    if (isBlocked(req.blocked, zone, ctx.now())) {
      attempts.push({ zone, outcome: "skipped", message: "blocked after a quota failure" });
      continue;
    }
    const rendered = renderTask(config, req.template.text, req.template.name, zone, req.spot);
    if (!rendered.ok) throw new ConfigError(rendered.errors.map((message) => ({ path: "template", message })));
    writeFileAtomic(taskFile, rendered.yaml, 0o600);
    const argv = skyLaunchArgv(config, taskFile, zone, req.spot);
    ctx.report.info(
      `launching ${config.name} (${config.topology.slices} x ${config.tpu.accelerator}${req.spot ? ", spot" : ""}) in ${zone}`,
    );
    appendFileSync(logFile, `\n$ sky ${argv.join(" ")}\n`);
    state = save(addEvent({ ...state, zone }, { event: "launch-attempt", zone }, ctx.now()));
    let inSetup = false;
    const res = await sky.launch(argv, zone, {
      env,
      signal: ctx.signal,
      timeoutMs: req.launchTimeoutMs,
      onLine: (line) => {
        appendFileSync(logFile, `${line}\n`);
        ctx.report.info(`  sky | ${line}`);
        // SkyPilot's markers (skypilot.md §2): the cluster is up and the setup job was submitted.
        if (!inSetup && /Setup detached|Job submitted, ID:/.test(line)) {
          inSetup = true;
          req.onSetup?.(zone);
        }
      },
    });
    const o = res.outcome;
    attempts.push({ zone, outcome: o.kind, ...("message" in o ? { message: o.message } : {}) });
    if (o.kind === "ok") {
      state = save(addEvent(state, { event: "launched", zone, durationMs: Date.now() - started }, ctx.now()));
      return { result: { ok: true, zone, attempts, ms: Date.now() - started }, state };
    }
    if (o.kind === "cancelled") {
      // Ctrl-C or timeout: the API server keeps provisioning until the request is cancelled.
      if (o.requestId) await sky.cancelRequest(o.requestId, { env: ctx.env }).catch(() => undefined);
      if (o.reason === "interrupted") throw interruptedFrom(ctx.signal);
      throw new OperationError(
        "launch_timeout",
        `sky launch in ${zone} did not finish within ${Math.round(req.launchTimeoutMs / 60000)} min`,
        {
          hint:
            config.topology.slices > 1
              ? "several single-host slices in one SkyPilot task can stay PENDING forever (skypilot.md: num_ips_per_node); try --nodes 4/8/16 for one multi-host slice, or raise launch.timeout"
              : "provisioning is slow in this zone; raise launch.timeout (--launch-timeout) or try another zone",
        },
      );
    }
    if (o.kind === "capacity" || o.kind === "preempted-creating" || o.kind === "quota") {
      if (o.kind === "quota") {
        sawQuota = true;
        // Block the region (or only the zone, when the message names one) for the rest of this run and 30 min after.
        req.blocked[o.where] = new Date(ctx.now().getTime() + 30 * 60_000).toISOString();
      }
      state = save(addEvent(state, { event: o.kind, zone, detail: o.message }, ctx.now()));
      ctx.report.warn(`${o.kind === "quota" ? "quota exhausted" : "no capacity"} in ${zone}: ${o.message}`);
      // Remove whatever the failed attempt left behind before moving on.
      await teardownCluster(ctx, config, { quiet: true });
      continue;
    }
    if (o.kind === "setup-failed") {
      throw new SkyError("setup_failed", `the task's setup failed on the hosts (sky exit ${o.exitCode}):\n${o.message}`, {
        argv,
        exitCode: o.exitCode,
        outputTail: o.message,
        hint: `read the setup log with \`sky logs ${config.name}\`; fix the template or sglang.ref, then run up again (the cluster is kept)`,
      });
    }
    if (o.kind === "invalid-task") {
      throw new SkyError("invalid_task", `SkyPilot rejected the task: ${o.message}`, {
        argv,
        hint: `check ${req.template.name} against your SkyPilot version (tpu-deploy render shows what was sent)`,
      });
    }
    throw new SkyError("sky_failed", `sky launch failed in ${zone}: ${o.message}`, {
      argv,
      ...("exitCode" in o ? { exitCode: o.exitCode } : {}),
      hint: `the full output is in ${logFile}`,
    });
  }
  return {
    result: { ok: false, attempts, kind: sawQuota && attempts.every((a) => a.outcome !== "capacity") ? "quota" : "capacity" },
    state,
  };
}
