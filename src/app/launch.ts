// The launch step of a replica's plan: `sky launch` one zone at a time, in the plan's order. Capacity and
// quota move on to the next zone (after `sky down` of the half-made cluster); anything else stops with
// what to do.
import type { ReplicaPlan, ZoneLaunch } from "../core/plan.js";
import type { LaunchOutcome } from "../core/sky-outcome.js";
import { regionOf } from "../core/topology.js";
import { OperationError, SkyError } from "../errors.js";
import { type AppContext, interruptedFrom } from "./context.js";
import { teardownCluster } from "./teardown.js";

export interface LaunchRequest {
  replica: ReplicaPlan;
  /** The deployment (its state directory holds the task file and the launch log). */
  deployment: string;
  generation: string;
  project: string | undefined;
  /** zone or region → until when it is blocked (ISO), from earlier quota failures. */
  blocked: Readonly<Record<string, string>>;
  launchTimeoutMs: number;
  /** For messages: what is being launched, and the template's name. */
  what: string;
  templateName: string;
  /** Called once per attempt when the hosts exist and SkyPilot starts the task's setup. */
  onSetup?: (zone: string) => void;
  /** History: launch-attempt, launched, capacity, quota, preempted-creating. */
  onEvent(event: string, zone: string, detail?: string): void;
  /** The zone being tried (recorded, so an interrupted launch knows where to clean up). */
  onZone(zone: string): void;
}

export interface ZoneAttempt {
  zone: string;
  outcome: LaunchOutcome["kind"] | "cancelled" | "skipped";
  message?: string;
}

export type LaunchResult =
  | { ok: true; zone: string; attempts: ZoneAttempt[]; ms: number; blocked: Record<string, string> }
  | { ok: false; attempts: ZoneAttempt[]; kind: "capacity" | "quota"; blocked: Record<string, string> };

const QUOTA_BLOCK_MS = 30 * 60_000;

function isBlocked(blocked: Readonly<Record<string, string>>, zone: string, now: Date): boolean {
  return [zone, regionOf(zone)].some((k) => {
    const until = blocked[k];
    return until !== undefined && new Date(until) > now;
  });
}

export async function launchWithFailover(ctx: AppContext, req: LaunchRequest): Promise<LaunchResult> {
  const { replica } = req;
  const sky = await ctx.sky();
  const name = replica.cluster;
  const blocked = { ...req.blocked };
  const attempts: ZoneAttempt[] = [];
  let sawQuota = false;
  const started = Date.now();
  for (const launch of replica.launches) {
    const { zone } = launch;
    if (isBlocked(blocked, zone, ctx.now())) {
      attempts.push({ zone, outcome: "skipped", message: "blocked after a quota failure" });
      continue;
    }
    ctx.store.writeTask(req.deployment, launch.taskYaml, replica.taskPath);
    ctx.report.info(`launching ${req.what} in ${zone}`);
    ctx.store.appendLaunchLog(req.deployment, `\n$ sky ${launch.skyArgv.join(" ")}\n`);
    req.onZone(zone);
    req.onEvent("launch-attempt", zone);
    let inSetup = false;
    const res = await sky.launch(launch.skyArgv, zone, {
      signal: ctx.signal,
      timeoutMs: req.launchTimeoutMs,
      onLine: (line) => {
        ctx.store.appendLaunchLog(req.deployment, `${line}\n`);
        ctx.report.info(`  sky | ${line}`);
        // SkyPilot's markers (docs/upstream/skypilot.md §2): the cluster is up and the setup job was submitted.
        if (!inSetup && /Setup detached|Job submitted, ID:/.test(line)) {
          inSetup = true;
          req.onSetup?.(zone);
        }
      },
    });
    const o = res.outcome;
    attempts.push({ zone, outcome: o.kind, ...("message" in o ? { message: o.message } : {}) });
    if (o.kind === "ok") {
      req.onEvent("launched", zone);
      return { ok: true, zone, attempts, ms: Date.now() - started, blocked };
    }
    if (o.kind === "cancelled") {
      // Ctrl-C or timeout: the API server keeps provisioning until the request is cancelled.
      if (o.requestId) await sky.cancelRequest(o.requestId).catch(() => undefined);
      if (o.reason === "interrupted") throw interruptedFrom(ctx.signal);
      throw new OperationError(
        "launch_timeout",
        `sky launch in ${zone} did not finish within ${Math.round(req.launchTimeoutMs / 60000)} min`,
        { hint: "provisioning is slow in this zone; raise launch.timeout (--launch-timeout) or try another zone" },
      );
    }
    if (o.kind === "capacity" || o.kind === "preempted-creating" || o.kind === "quota") {
      if (o.kind === "quota") {
        sawQuota = true;
        // Block the region (or only the zone, when the message names one) for the rest of this run and 30 min after.
        blocked[o.where] = new Date(ctx.now().getTime() + QUOTA_BLOCK_MS).toISOString();
      }
      req.onEvent(o.kind, zone, o.message);
      ctx.report.warn(`${o.kind === "quota" ? "quota exhausted" : "no capacity"} in ${zone}: ${o.message}`);
      // Remove whatever the failed attempt left behind before moving on.
      // This run made it moments ago, so whatever it left is ours to delete in any state.
      await teardownCluster(
        ctx,
        { name, generation: req.generation, project: req.project, zones: [zone] },
        { quiet: true, leftovers: "all" },
      );
      continue;
    }
    throw launchError(req, launch, o, ctx.store.launchLogPath(req.deployment));
  }
  const kind = sawQuota && attempts.every((a) => a.outcome !== "capacity") ? "quota" : "capacity";
  return { ok: false, attempts, kind, blocked };
}

function launchError(req: LaunchRequest, launch: ZoneLaunch, o: LaunchOutcome, logFile: string): SkyError {
  const argv = launch.skyArgv;
  if (o.kind === "setup-failed") {
    return new SkyError("setup_failed", `the task's setup failed on the hosts (sky exit ${o.exitCode}):\n${o.message}`, {
      argv,
      exitCode: o.exitCode,
      outputTail: o.message,
      hint: `read the setup log with \`sky logs ${req.replica.cluster}\`; fix the template or sglang.ref, then run up again (the cluster is kept)`,
    });
  }
  if (o.kind === "invalid-task") {
    const v7 = req.generation === "v7";
    return new SkyError("invalid_task", `SkyPilot rejected the task: ${o.message}`, {
      argv,
      hint: v7
        ? "TPU7x needs a TPU7x-capable SkyPilot build (stock SkyPilot has no tpu7x-standard-4t and no TPU Flex-start instance groups; see the README's TPU7x section); tpu-deploy render shows what was sent"
        : `check ${req.templateName} against your SkyPilot version (tpu-deploy render shows what was sent)`,
    });
  }
  return new SkyError("sky_failed", `sky launch failed in ${launch.zone}: ${"message" in o ? o.message : o.kind}`, {
    argv,
    ...("exitCode" in o ? { exitCode: o.exitCode } : {}),
    hint: `the full output is in ${logFile}`,
  });
}
