// The fake `sky` of the simulated TPU cloud: SkyPilot's command line (argv, output, files, exit codes)
// over the sim's state. Every invocation is logged to SIM_ROOT/calls/sky.jsonl with its exit code.
import { appendCall } from "../state.js";
import { commandSpec, parseCommand, usageError, type Parsed } from "./click.js";
import { cmdApiCancel, cmdApiInfo, cmdApiLogs, cmdApiStart, cmdApiStatus, cmdApiStop, cmdCheck } from "./cmd-api.js";
import { runDueDaemonRefresh } from "./cluster.js";
import { cmdDown, cmdStatus, cmdStop } from "./cmd-cluster.js";
import { cmdExec, cmdLogs, cmdQueue } from "./cmd-jobs.js";
import { cmdLaunch } from "./cmd-launch.js";
import { makeCtx, type Ctx } from "./context.js";
import { Abort, Exit, SkyException, UsageError } from "./errors.js";
import { HELP_TEXTS } from "./help-texts.js";
import { installSignalHandlers } from "./interrupt.js";
import { errln, out, outln } from "./io.js";
import { getCloseMatches } from "./pyfmt.js";
import { redactArgv } from "./task-options.js";
import { SKY_COMMIT, SKY_VERSION } from "./version.js";

type Handler = (ctx: Ctx, p: Parsed) => Promise<number>;

// Top-level commands in `sky --help` order; subgroups list their subcommands.
const TOP = [
  "launch",
  "exec",
  "status",
  "cost-report",
  "queue",
  "logs",
  "cancel",
  "stop",
  "autostop",
  "start",
  "down",
  "check",
  "gpus",
  "storage",
  "volumes",
  "jobs",
  "dashboard",
  "serve",
  "api",
  "ssh",
  "debug-dump",
];
const GROUPS: Record<string, { help: string; commands: string[] }> = {
  api: { help: "SkyPilot API server commands.", commands: ["cancel", "info", "login", "logs", "start", "status", "stop"] },
  jobs: { help: "Managed Jobs CLI (jobs with auto-recovery).", commands: ["launch", "queue", "cancel", "logs"] },
  serve: { help: "SkyServe CLI (multi-region, multi-cloud serving).", commands: ["up", "update", "status", "down", "logs"] },
  gpus: { help: "SkyPilot GPU/Accelerator CLI.", commands: ["list"] },
  storage: { help: "SkyPilot Storage CLI.", commands: ["ls", "delete"] },
  volumes: { help: "SkyPilot Volumes CLI.", commands: ["apply", "ls", "delete"] },
  ssh: { help: "Commands for managing SSH Node Pools.", commands: ["up", "down"] },
};

const HANDLERS: Record<string, Handler> = {
  launch: cmdLaunch,
  exec: cmdExec,
  status: cmdStatus,
  queue: cmdQueue,
  logs: cmdLogs,
  down: cmdDown,
  stop: cmdStop,
  check: cmdCheck,
  "api cancel": cmdApiCancel,
  "api status": cmdApiStatus,
  "api logs": cmdApiLogs,
  "api info": cmdApiInfo,
  "api start": cmdApiStart,
  "api stop": cmdApiStop,
};

function groupHelp(name: string): string {
  const g = GROUPS[name];
  const cmds = g?.commands ?? [];
  const width = Math.max(...cmds.map((c) => c.length));
  return (
    `Usage: sky ${name} [OPTIONS] COMMAND [ARGS]...\n\n  ${g?.help ?? ""}\n\nOptions:\n  -h, --help  Show this message and exit.\n\nCommands:\n` +
    cmds.map((c) => `  ${c.padEnd(width)}  ${(HELP_TEXTS[`${name} ${c}`] ?? "").split("\n")[2]?.trim() ?? ""}`).join("\n") +
    "\n"
  );
}

function genericHelp(key: string): string {
  return `Usage: sky ${key} [OPTIONS] [ARGS]...\n\nOptions:\n  -h, --help  Show this message and exit.\n`;
}

const TOP_SPEC = { key: "", usage: "Usage: sky [OPTIONS] COMMAND [ARGS]..." };

async function dispatch(ctx: Ctx, argv: string[]): Promise<number> {
  if (argv.length === 0) {
    out(HELP_TEXTS[""] ?? "");
    return 0;
  }
  // Group options come before the command (click groups do not intersperse).
  let i = 0;
  const groupLong = ["--install-shell-completion", "--uninstall-shell-completion", "--version", "--commit", "--help"];
  while (i < argv.length && (argv[i] ?? "").startsWith("-") && argv[i] !== "-") {
    const a = argv[i] as string;
    if (a === "--") {
      i++;
      break;
    }
    if (a === "-h" || a === "--help") {
      out(HELP_TEXTS[""] ?? "");
      return 0;
    }
    if (a === "-v" || a === "--version") {
      outln(`skypilot, version ${SKY_VERSION}`);
      return 0;
    }
    if (a === "-c" || a === "--commit") {
      outln(`skypilot, commit ${SKY_COMMIT}`);
      return 0;
    }
    const name = a.split("=")[0] ?? a;
    if (name === "--install-shell-completion" || name === "--uninstall-shell-completion") {
      throw new SkyException("RuntimeError", "Shell completion is not available in the simulated sky.");
    }
    if (name.startsWith("--")) {
      const poss = getCloseMatches(name, groupLong);
      let msg = `No such option: ${name}`;
      if (poss.length === 1) msg += ` Did you mean ${poss[0]}?`;
      else if (poss.length > 1) msg += ` (Possible options: ${[...poss].sort().join(", ")})`;
      throw usageError(TOP_SPEC, msg);
    }
    throw usageError(TOP_SPEC, `No such option: ${a.slice(0, 2)}`);
  }
  const cmd = argv[i];
  if (cmd === undefined) throw usageError(TOP_SPEC, "Missing command.");
  if (!TOP.includes(cmd)) throw usageError(TOP_SPEC, `No such command '${cmd}'.`);
  let key = cmd;
  let rest = argv.slice(i + 1);
  const group = GROUPS[cmd];
  if (group) {
    const gspec = { key: cmd, usage: `Usage: sky ${cmd} [OPTIONS] COMMAND [ARGS]...` };
    const j = 0;
    while (j < rest.length && (rest[j] ?? "").startsWith("-")) {
      const a = rest[j] as string;
      if (a === "-h" || a === "--help") {
        out(groupHelp(cmd));
        return 0;
      }
      throw usageError(gspec, a.startsWith("--") ? `No such option: ${a.split("=")[0] ?? a}` : `No such option: ${a.slice(0, 2)}`);
    }
    const sub = rest[j];
    if (sub === undefined) {
      out(groupHelp(cmd));
      return 0;
    }
    if (!group.commands.includes(sub)) throw usageError(gspec, `No such command '${sub}'.`);
    key = `${cmd} ${sub}`;
    rest = rest.slice(j + 1);
  }
  const spec = commandSpec(key);
  if (!spec) {
    if (rest.includes("-h") || rest.includes("--help")) {
      out(genericHelp(key));
      return 0;
    }
    throw new SkyException("RuntimeError", `\`sky ${key}\` is not simulated by the fake sky of the tpu-deploy sim.`);
  }
  const parsed = parseCommand(spec, rest, ctx.env);
  if (parsed.help) {
    out(HELP_TEXTS[key] ?? "");
    return 0;
  }
  const handler = HANDLERS[key];
  if (!handler) throw new SkyException("RuntimeError", `\`sky ${key}\` is not simulated by the fake sky of the tpu-deploy sim.`);
  // What the API server's refresh daemon did since the last request, before this one is served.
  if (ctx.root !== "") await runDueDaemonRefresh(ctx.root);
  return await handler(ctx, parsed.parsed);
}

function report(e: unknown): number {
  if (e instanceof Exit) return e.code;
  if (e instanceof UsageError) {
    if (e.usage !== null) {
      errln(e.usage);
      if (e.helpHint !== null) errln(e.helpHint);
      errln();
    }
    errln(`Error: ${e.message}`);
    return 2;
  }
  if (e instanceof Abort) {
    if (e.newline) errln();
    errln("Aborted!");
    return 1;
  }
  if (e instanceof SkyException) {
    errln(`${e.pyClass}: ${e.message}`);
    return 1;
  }
  errln(`Traceback (most recent call last):\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return 1;
}

async function finish(ctx: Ctx, code: number): Promise<never> {
  if (ctx.root !== "") {
    try {
      await appendCall(ctx.root, "sky", { argv: redactArgv(ctx.argv), cwd: ctx.cwd, exit: code });
    } catch {
      // the sim may be gone
    }
  }
  process.exit(code);
}

const argv = process.argv.slice(2);
const ctx = makeCtx(argv);
let finishing = false;
installSignalHandlers(() => {
  if (finishing) return;
  finishing = true;
  errln();
  errln("Aborted!");
  void finish(ctx, 1);
});
dispatch(ctx, argv).then(
  (code) => {
    finishing = true;
    void finish(ctx, code);
  },
  (e: unknown) => {
    finishing = true;
    void finish(ctx, report(e));
  },
);
