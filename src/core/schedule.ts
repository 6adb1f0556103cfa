// What `tpu-deploy schedule` writes: cron expressions, the crontab entry, the systemd service and timer
// units and the marker that recognises them. Pure: text from data; installing is src/app/schedule.ts.
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { checkName } from "./paths.js";
import { parseDuration } from "./duration.js";
import { stateHome } from "./paths.js";
import { shellQuote } from "./quote.js";

/** Environment carried into the scheduled run when set here (never secret values). */
const CARRIED_ENV = [
  "PATH",
  "TPU_DEPLOY_SKY",
  "GOOGLE_CLOUD_PROJECT",
  "GOOGLE_APPLICATION_CREDENTIALS",
  "CLOUDSDK_CONFIG",
  "SKYPILOT_API_SERVER_ENDPOINT",
  "TPU_EMULATOR_HOST",
] as const;

const FIELDS = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12 },
  { name: "day of week", min: 0, max: 7 },
] as const;

/** `--every 5m` as a cron expression; only intervals that divide an hour or a day evenly. */
export function cronFromEvery(every: string): string {
  const ms = parseDuration(every);
  const minutes = ms === undefined ? Number.NaN : ms / 60_000;
  if (Number.isInteger(minutes) && minutes >= 1) {
    if (minutes < 60 && 60 % minutes === 0) return minutes === 1 ? "* * * * *" : `*/${minutes} * * * *`;
    const hours = minutes / 60;
    if (Number.isInteger(hours) && hours < 24 && 24 % hours === 0) return hours === 1 ? "0 * * * *" : `0 */${hours} * * *`;
    if (hours === 24) return "0 0 * * *";
  }
  throw new UsageError(`--every '${every}' is not an interval cron can keep`, {
    hint: 'use 1m, 2m, 3m, 4m, 5m, 6m, 10m, 12m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h or 24h, or --cron "EXPR"',
  });
}

/** The values a cron field matches, or an error message. Numbers only (no names), as in POSIX crontab. */
function fieldValues(text: string, f: (typeof FIELDS)[number]): number[] | string {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) return `'${part}' is not a number, a range a-b, * or a step /n`;
    const lo = m[1] === "*" ? f.min : Number(m[2]);
    const hi = m[1] === "*" ? f.max : m[3] !== undefined ? Number(m[3]) : m[4] !== undefined ? f.max : lo;
    const step = m[4] !== undefined ? Number(m[4]) : 1;
    if (lo < f.min || hi > f.max || lo > hi) return `'${part}' is outside ${f.min}-${f.max}`;
    if (step < 1) return `'${part}' has a step of 0`;
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return [...out].sort((a, b) => a - b);
}

export function checkCron(expr: string): string[][] {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) {
    throw new UsageError(`--cron '${expr}' must have 5 fields (minute hour day-of-month month day-of-week), e.g. "*/5 * * * *"`);
  }
  const problems: string[] = [];
  parts.forEach((p, i) => {
    const f = FIELDS[i];
    if (!f) return;
    const v = fieldValues(p, f);
    if (typeof v === "string") problems.push(`${f.name}: ${v}`);
  });
  if (problems.length > 0) throw new UsageError(`--cron '${expr}': ${problems.join("; ")}`);
  return parts.map((p) => p.split(","));
}

const DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** The systemd OnCalendar= form of a cron expression (explicit value lists, which systemd reads as cron does). */
export function onCalendarFromCron(expr: string): string {
  checkCron(expr);
  const parts = expr.trim().split(/\s+/);
  const values = parts.map((p, i) => {
    const f = FIELDS[i];
    return f && p !== "*" ? (fieldValues(p, f) as number[]) : undefined;
  });
  const [minute, hour, dom, month, dow] = values;
  if (dom && dow) {
    throw new UsageError(
      `--cron '${expr}' restricts both the day of month and the day of week: cron runs on either, systemd only on both`,
      {
        hint: "restrict one of them, or use --install cron",
      },
    );
  }
  const list = (v: number[] | undefined, pad: boolean) =>
    v ? v.map((n) => (pad ? String(n).padStart(2, "0") : String(n))).join(",") : "*";
  const days = dow ? `${[...new Set(dow.map((d) => DOW[d] ?? "Sun"))].join(",")} ` : "";
  return `${days}*-${list(month, true)}-${list(dom, true)} ${list(hour, true)}:${list(minute, true)}:00`;
}

export interface ScheduleSpec {
  name: string;
  cron: string;
  /** Absolute paths: the node binary and the tpu-deploy bin that is running now. */
  node: string;
  bin: string;
  env: NodeJS.ProcessEnv;
  home: string;
}

export interface Schedule {
  name: string;
  cron: string;
  marker: string;
  /** The shell command cron runs (what follows the five time fields). */
  command: string;
  cronEntry: string;
  logFile: string;
  unitName: string;
  service: string;
  timer: string;
}

// Control characters end a crontab line or a unit file directive (or are read as garbage), and
// quoting cannot help: cron and systemd split lines before any shell or unquoting sees them.
const CONTROL = /[\x00-\x1f\x7f]/;
const CONTROL_NAMES: Record<number, string> = { 0: "NUL", 9: "tab", 10: "line feed", 13: "carriage return", 27: "escape", 127: "delete" };

/** Refuses, all at once, every value that holds a control character, naming where it came from. */
function checkPrintable(values: readonly (readonly [source: string, value: string])[]): void {
  const problems: string[] = [];
  for (const [source, value] of values) {
    const m = CONTROL.exec(value);
    if (!m) continue;
    const code = value.charCodeAt(m.index);
    const name = CONTROL_NAMES[code];
    const char = `U+${code.toString(16).toUpperCase().padStart(4, "0")}${name ? ` (${name})` : ""}`;
    problems.push(`${source} contains the control character ${char} at position ${m.index + 1}`);
  }
  if (problems.length === 0) return;
  throw new UsageError(`${problems.join("; ")}; no crontab line or systemd unit can hold a control character`, {
    hint: "cron and systemd split entries at line breaks, so the rest would run as an entry of its own; remove the control character and run tpu-deploy schedule again",
  });
}

export function markerOf(name: string): string {
  checkName(name);
  return `# tpu-deploy:relaunch:${name} (installed by tpu-deploy schedule; remove with: tpu-deploy schedule ${name} --uninstall)`;
}

export function unitNameOf(name: string): string {
  checkName(name);
  return `tpu-deploy-relaunch-${name}`;
}

export function logFileOf(env: NodeJS.ProcessEnv, name: string): string {
  checkName(name);
  return join(stateHome(env), "logs", `relaunch-${name}.log`);
}

export function userUnitDir(env: NodeJS.ProcessEnv, home: string): string {
  return join(env.XDG_CONFIG_HOME || join(home, ".config"), "systemd", "user");
}

export function buildSchedule(spec: ScheduleSpec): Schedule {
  checkName(spec.name);
  // The checked form: fields joined by single spaces, whatever whitespace (a newline) separated them.
  const cron = checkCron(spec.cron)
    .map((f) => f.join(","))
    .join(" ");
  const tpdHome = stateHome(spec.env);
  const logFile = logFileOf(spec.env, spec.name);
  const env: [string, string][] = [
    ["HOME", spec.home],
    ["TPU_DEPLOY_HOME", tpdHome],
  ];
  for (const k of CARRIED_ENV) {
    const v = spec.env[k];
    if (v) env.push([k, v]);
  }
  env.sort((a, b) => (a[0] === "PATH" ? -1 : b[0] === "PATH" ? 1 : 0));
  const argv = [spec.node, spec.bin, "relaunch", spec.name];
  // Every value below goes into the line and the units; the log file is TPU_DEPLOY_HOME and the checked name.
  const tpdHomeSource = spec.env.TPU_DEPLOY_HOME ? "TPU_DEPLOY_HOME" : "TPU_DEPLOY_HOME (by default $HOME/.tpu-deploy)";
  checkPrintable([
    ...env.map(([k, v]) => [k === "TPU_DEPLOY_HOME" ? tpdHomeSource : k, v] as const),
    ["the path of node", spec.node],
    ["the path of the tpu-deploy script", spec.bin],
  ]);
  // No secrets here: relaunch reads server.secretsFile from the deployment's state with the parser `up`
  // used, the environment first. A shell sourcing the file would run any $(...) in it and read values
  // differently; systemd's EnvironmentFile= parses it a third way.
  const shell = `export ${env.map(([k, v]) => `${k}=${shellQuote(v)}`).join(" ")}; ${argv.map(shellQuote).join(" ")}`;
  // The whole group's output goes to the log, including a failing export.
  const command = `{ ${shell}; } >> ${shellQuote(logFile)} 2>&1`;
  // cron turns an unescaped % into a newline.
  const cronEntry = `${cron} ${command.replace(/%/g, "\\%")}`;
  const unitName = unitNameOf(spec.name);
  const service = [
    markerOf(spec.name),
    "[Unit]",
    `Description=tpu-deploy relaunch ${spec.name}: bring the deployment back after a spot preemption`,
    "After=network-online.target",
    "",
    "[Service]",
    "Type=oneshot",
    ...env.map(([k, v]) => `Environment=${systemdQuote(`${k}=${v}`)}`),
    `ExecStart=${argv.map((a) => systemdQuote(a).replace(/\$/g, "$$$$")).join(" ")}`,
    `StandardOutput=append:${systemdEscape(logFile)}`,
    `StandardError=append:${systemdEscape(logFile)}`,
    "",
  ].join("\n");
  const timer = [
    markerOf(spec.name),
    "[Unit]",
    `Description=Run tpu-deploy relaunch ${spec.name} on a schedule (cron: ${cron})`,
    "",
    "[Timer]",
    `OnCalendar=${onCalendarFromCron(cron)}`,
    "AccuracySec=1s",
    `Unit=${unitName}.service`,
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
  return { name: spec.name, cron, marker: markerOf(spec.name), command, cronEntry, logFile, unitName, service, timer };
}

function systemdEscape(s: string): string {
  return s.replace(/%/g, "%%");
}

/** One word for systemd's command-line/assignment parser: double-quoted when needed, specifiers escaped. */
function systemdQuote(s: string): string {
  const escaped = systemdEscape(s);
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped) ? escaped : `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The crontab without our entry for name: the marker line and the entry right after it. */
export function withoutEntry(text: string, name: string): { text: string; found: boolean } {
  const lines = text.split("\n");
  const marker = markerOf(name);
  const out: string[] = [];
  let found = false;
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] === marker) {
      found = true;
      i++; // the entry itself
      continue;
    }
    out.push(lines[i] ?? "");
  }
  return { text: out.join("\n"), found };
}

/** The crontab with our entry for s.name in place of any earlier one (appended, keeping the user's lines as they are). */
export function withEntry(text: string, s: Schedule): string {
  const current = withoutEntry(text, s.name).text;
  const base = current === "" || current.endsWith("\n") ? current : `${current}\n`;
  return `${base}${s.marker}\n${s.cronEntry}\n`;
}
