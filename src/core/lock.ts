// A deployment's lock, as data: what a holder writes into it, how long each command may hold it, and
// whether a lock found in place is stale (taken over), held, or held by a live run past its deadline
// (stuck: reported, never waited out in silence, never taken over while the holder lives).
import { z } from "zod";
import type { Config } from "./config.js";

// Lenient on every field the previous version did not write: a lock we cannot read whole is taken over as
// torn, and taking over a live run's lock over one odd field would be worse than ignoring that field.
const lockInfo = z.looseObject({
  pid: z.number().int().positive(),
  host: z.string(),
  command: z.string(),
  startedAt: z.string(),
  /** Field 22 of /proc/PID/stat: the holder's start in clock ticks after boot (Linux). */
  procStartTicks: z.number().int().nonnegative().optional().catch(undefined),
  /** /proc/sys/kernel/random/boot_id when the lock was written (Linux). */
  bootId: z.string().min(1).optional().catch(undefined),
  /** startedAt + the hold the command asked for. */
  deadline: z.iso.datetime({ offset: true }).optional().catch(undefined),
});
export type LockInfo = z.infer<typeof lockInfo>;

/** The lock file's text as a LockInfo; undefined when it is not one (torn by a crashed writer, or damaged). */
export function parseLockInfo(text: string): LockInfo | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = lockInfo.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

// How long each command may hold the lock: the one place these bounds are set (README, "Locks").
/** A live holder this long past its deadline is stuck. */
export const STUCK_AFTER_MS = 5 * 60_000;
/** Beyond the launch and readiness bounds: sky down of half-made clusters, discovery, cleanup after a failure. */
export const HOLD_MARGIN_MS = 30 * 60_000;
/** down and gc: stop the servers, sky down (itself bounded at 20 min), verify. */
export const TEARDOWN_HOLD_MS = 30 * 60_000;
/** status, logs, proxy pinning host keys a state written before pinning lacked: one read and one write. */
export const PIN_HOLD_MS = 60_000;

/** up, restart, relaunch: the run's --timeout when given, else every zone's launch timeout plus the readiness timeout; plus the margin. */
export function deployHoldMs(config: Pick<Config, "launch" | "tpu" | "server">, timeoutMs?: number): number {
  const bound = timeoutMs ?? config.launch.timeoutMs * config.tpu.zones.length + config.server.readyTimeoutMs;
  return bound + HOLD_MARGIN_MS;
}

/** What the machine says about a pid, asked only when the verdict needs it. */
export interface PidProbe {
  alive: boolean;
  /** Field 22 of /proc/PID/stat; undefined where it cannot be read. */
  startTicks: number | undefined;
}

export interface LockHere {
  host: string;
  bootId: string | undefined;
  now: Date;
}

export type LockVerdict = { kind: "stale"; why: string } | { kind: "held"; stuck: boolean };

/**
 * Stale when its holder is certainly gone: on this host, written in an earlier boot, its pid dead, or its pid
 * alive but started at another time (reused). A lock from another host cannot be checked from here. Fields
 * a lock lacks (the previous format) are not evidence: such a lock falls back to the pid check.
 */
export function judgeLock(holder: LockInfo, here: LockHere, probe: (pid: number) => PidProbe): LockVerdict {
  if (holder.host === here.host) {
    if (holder.bootId !== undefined && here.bootId !== undefined && holder.bootId !== here.bootId)
      return { kind: "stale", why: "it was written before this machine rebooted" };
    const p = probe(holder.pid);
    if (!p.alive) return { kind: "stale", why: "it is no longer running" };
    if (holder.procStartTicks !== undefined && p.startTicks !== undefined && holder.procStartTicks !== p.startTicks)
      return { kind: "stale", why: "it is no longer running (its pid now belongs to another process)" };
  }
  const deadline = holder.deadline === undefined ? Number.NaN : Date.parse(holder.deadline);
  return { kind: "held", stuck: Number.isFinite(deadline) && here.now.getTime() > deadline + STUCK_AFTER_MS };
}
