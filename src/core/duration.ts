// Durations as users write them: `90s`, `20m`, `1h30m`, `2d`, or a bare number of seconds.

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** What parseDuration accepts as a string; also the pattern the config's JSON Schema shows. */
export const DURATION_PATTERN = /^\s*(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+)\s*$/;

/** Node's timers hold a signed 32-bit delay: a longer one fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function parseDuration(input: string | number): number | undefined {
  if (typeof input === "number") return Number.isFinite(input) && input >= 0 ? input * 1000 : undefined;
  if (!DURATION_PATTERN.test(input)) return undefined;
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) total += Number(m[1]) * (UNIT_MS[m[2] ?? "s"] ?? 0);
  return total;
}

export type TimerDuration = { ok: true; ms: number } | { ok: false; problem: string };

/** A duration something will wait for with a timer: more than 0 and at most MAX_TIMER_MS. */
export function timerDuration(input: string | number): TimerDuration {
  const ms = parseDuration(input);
  if (ms === undefined || ms <= 0) return { ok: false, problem: "is not a duration (examples: 90s, 20m, 1h30m)" };
  if (ms > MAX_TIMER_MS) return { ok: false, problem: "is too long: Node.js timers wait at most 2^31-1 ms (about 24.8 days)" };
  return { ok: true, ms };
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const totalSeconds = Math.round(ms / 1000);
  const h = Math.floor(totalSeconds / 3600);
  const m = Math.floor((totalSeconds % 3600) / 60);
  const sec = totalSeconds % 60;
  if (h > 0) return `${h}h${m > 0 ? `${m}m` : ""}`;
  if (m > 0) return `${m}m${sec > 0 ? `${sec}s` : ""}`;
  return `${sec}s`;
}
