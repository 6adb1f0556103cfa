// The command tree. Each command's module is imported only when it runs, so `--help` stays instant.
import { Command, CommanderError, Option } from "commander";
import type { Deps } from "../app/deps.js";
import { EXIT, UsageError } from "../errors.js";
import { addSpecOptions, int } from "./config-flags.js";
import { type Io, type OutputFlags, reportError, writeJson } from "./io.js";

/** What every command gets: the terminal, the run's signal (Ctrl-C, SIGTERM) and the dependencies. */
export interface RunContext {
  io: Io;
  signal: AbortSignal;
  deps: Deps;
  /** Makes `deps` ready; called once a command is about to run (so --help never builds them). */
  prepare?: () => Promise<void>;
}

/** A command's outcome. With a non-zero code, `json` is the error document: {code, message, hint?, ...details}. */
export type CommandResult = { code: number; json?: unknown };

// Each command declares its own flags type; commander hands a plain object. A method's parameters are
// checked bivariantly, which lets `(opts: UpFlags) => …` stand where any flags object may arrive.
type Handler = {
  handle(opts: Record<string, unknown>, args: string[], ctx: RunContext): Promise<CommandResult>;
}["handle"];

export const VERSION = "0.1.0";

function addOutputOptions(cmd: Command): Command {
  return cmd
    .option("--json", "print one JSON document on stdout")
    .option("-q, --quiet", "no progress output")
    .option("-v, --verbose", "more detail, and stack traces on errors");
}

export function makeProgram(ctx: RunContext, setCode: (code: number) => void): Command {
  const program = new Command("tpu-deploy")
    .description("Put the sglang-jax LLM server on Google Cloud TPU v6e and v7 slices through SkyPilot.")
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.io.stdout.write(s),
      writeErr: (s) => ctx.io.stderr.write(s),
    });

  const define = (name: string, description: string, load: () => Promise<Handler>) => {
    const cmd = addOutputOptions(program.command(name).description(description));
    cmd.action(async (...raw: unknown[]) => {
      const command = raw.at(-1) as Command;
      const opts = command.opts();
      const args = command.args;
      const flags = opts as OutputFlags;
      try {
        const handler = await load();
        await ctx.prepare?.();
        const result = await handler(opts, args, ctx);
        if (flags.json && result.json !== undefined) {
          const payload = result.code === EXIT.ok ? { ok: true as const, result: result.json } : { ok: false as const, error: result.json };
          writeJson(ctx.io, name.split(" ")[0] ?? name, payload);
        }
        setCode(result.code);
      } catch (err) {
        setCode(reportError(ctx.io, name.split(" ")[0] ?? name, err, flags));
      }
    });
    return cmd;
  };

  addSpecOptions(
    define("up", "launch a slice, start sglang-jax on every host and wait until it serves", () =>
      import("./commands/up.js").then((m) => m.upCommand),
    ),
  )
    .option("--dry-run", "print the sky.yaml, the sky launch argv and the rank plan; touch nothing")
    .option("--timeout <duration>", "bound the whole run")
    .option("--recreate", "tear down and launch again when the slice's resources changed")
    .option("--keep-on-failure", "leave the cluster up when up fails (for debugging)")
    .option("--down-on-interrupt", "on Ctrl-C after the launch, tear the slice down too (default: keep it, say how to continue)")
    .option("--min-ready <k>", "return once K replicas serve (the others keep loading; status shows them)", int("--min-ready"))
    .option("--force", "act on clusters another tpu-deploy installation launched (their owner label)")
    .option("-y, --yes", "do not prompt");

  addSpecOptions(
    define("render", "write the rendered sky.yaml (stdout, or -o FILE)", () => import("./commands/render.js").then((m) => m.renderCommand)),
  ).option("-o, --output <file>", "write to this file instead of stdout");

  define("schema", "print the JSON Schema of tpu-deploy.yaml", () => import("./commands/schema.js").then((m) => m.schemaCommand));

  define("status [names...]", "show every deployment (or the named ones): cluster, TPU nodes, ranks, health", () =>
    import("./commands/status.js").then((m) => m.statusCommand),
  );

  define("logs <name>", "server logs from the hosts, each line prefixed with its rank", () =>
    import("./commands/logs.js").then((m) => m.logsCommand),
  )
    .option("--replica <i>", "one replica, or all (default)", int("--replica"))
    .option("--rank <n|all>", "one rank, or all (default)")
    .option("-f, --follow", "keep following")
    .option("--tail <n>", "lines from the end of each log (default 100)");

  define(
    "proxy <name>",
    "serve http://127.0.0.1:PORT from rank 0's server through SSH until Ctrl-C (adds the API key; any local user can use the port)",
    () => import("./commands/proxy.js").then((m) => m.proxyCommand),
  )
    .option("--local-port <n>", "local port (0 picks a free one)")
    .option("--unix-socket <path>", "listen on a unix socket only you can use (0600), not a port: for shared machines");

  define("restart <name>", "stop and start the servers on the current hosts (no reprovisioning), one replica at a time", () =>
    import("./commands/restart.js").then((m) => m.restartCommand),
  )
    .option("--all-at-once", "every replica at once instead of one at a time")
    .option("--replica <i>", "only this replica", int("--replica"))
    .option("--force", "act on clusters another tpu-deploy installation launched (their owner label)");

  addSpecOptions(
    define("doctor [name]", "check what usually breaks a launch: sky, zones, secrets, state directory", () =>
      import("./commands/doctor.js").then((m) => m.doctorCommand),
    ),
  );

  define("down [names...]", "stop the servers, tear the cluster down and verify it is gone", () =>
    import("./commands/down.js").then((m) => m.downCommand),
  )
    .option("--all", "every deployment")
    .option("--replica <i>", "only this replica of the named deployment", int("--replica"))
    .option("--force", "act on clusters another tpu-deploy installation launched (their owner label)")
    .option("-y, --yes", "do not prompt");

  define("relaunch [name]", "check a deployment once and bring it back if it was preempted or its servers died (cron-safe)", () =>
    import("./commands/relaunch.js").then((m) => m.relaunchCommand),
  )
    .option("--all", "every deployment")
    .option("--reset", "forget failed attempts and a give-up, then check again")
    .option("--timeout <duration>", "bound this attempt (it blocks until the deployment serves)")
    .option("--backoff <duration>", "wait after the first failed attempt, doubled per failure (default 1m)")
    .option("--backoff-max <duration>", "longest wait between attempts (default 30m)")
    .option("--force", "act on clusters another tpu-deploy installation launched (their owner label)")
    // watch runs each check as `relaunch NAME --report-fd 3` and reads the report there (not for users).
    .addOption(new Option("--report-fd <fd>").hideHelp().argParser(int("--report-fd")));

  define("watch [name]", "the relaunch check in a loop in the foreground, until SIGTERM or Ctrl-C", () =>
    import("./commands/watch.js").then((m) => m.watchCommand),
  )
    .option("--all", "every deployment")
    .option("--interval <duration>", "time between checks (default 60s)")
    .option("--timeout <duration>", "bound each attempt")
    .option("--backoff <duration>", "wait after the first failed attempt, doubled per failure (default 1m)")
    .option("--backoff-max <duration>", "longest wait between attempts (default 30m)")
    .option("--force", "act on clusters another tpu-deploy installation launched (their owner label)");

  define("schedule <name>", "print or install the cron line or systemd timer that runs tpu-deploy relaunch NAME", () =>
    import("./commands/schedule.js").then((m) => m.scheduleCommand),
  )
    .option("--every <interval>", "how often: 1m…30m dividing an hour, 1h…24h dividing a day")
    .option("--cron <expr>", "a 5-field cron expression instead of --every")
    .option("--install <kind>", "install it: cron (crontab -l / crontab -) or systemd (user timer)")
    .option("--systemd", "print the systemd service and timer units instead of the crontab line")
    .option("--uninstall", "remove what --install installed for NAME");

  define("gc", "find clusters, TPU nodes and state files of tpu-deploy that nobody owns; -y removes them", () =>
    import("./commands/gc.js").then((m) => m.gcCommand),
  )
    .option("--dry-run", "only list them")
    .option("--force", "also remove what another tpu-deploy installation launched (listed, skipped without it)")
    .option("-y, --yes", "remove without asking");

  return program;
}

export async function runProgram(argv: string[], ctx: RunContext): Promise<number> {
  let code: number = EXIT.ok;
  const program = makeProgram(ctx, (c) => {
    code = c;
  });
  const json = argv.includes("--json");
  const commandName = argv.find((a) => !a.startsWith("-")) ?? "tpu-deploy";
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") {
        return EXIT.ok;
      }
      if (err.code === "commander.executeSubCommandAsync") return EXIT.failed;
      const message = err.message.replace(/^error: /, "");
      if (json) {
        return reportError(ctx.io, commandName, new UsageError(message, { hint: "run with --help for usage" }), { json });
      }
      return EXIT.usage;
    }
    if (err instanceof UsageError) return reportError(ctx.io, commandName, err, { json });
    throw err;
  }
  return code;
}
