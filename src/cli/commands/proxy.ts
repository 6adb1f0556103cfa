import { resolve } from "node:path";
import { openProxy } from "../../app/proxy.js";
import { checkName } from "../../core/paths.js";
import { UsageError } from "../../errors.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function proxyCommand(
  opts: OutputFlags & { localPort?: string; unixSocket?: string },
  args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const name = checkName(args[0] ?? "");
  if (opts.unixSocket !== undefined && opts.localPort !== undefined)
    throw new UsageError("--unix-socket and --local-port exclude each other");
  const localPort = opts.localPort === undefined ? 0 : Number(opts.localPort);
  if (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535)
    throw new UsageError(`--local-port must be 0..65535, got ${opts.localPort}`);
  if (opts.unixSocket === "") throw new UsageError("--unix-socket needs a path");
  const socketPath = opts.unixSocket === undefined ? undefined : resolve(run.io.cwd, opts.unixSocket);
  const ctx = appContext(run, opts);
  const proxy = await openProxy(ctx, name, { listen: socketPath === undefined ? { port: localPort } : { socketPath } });
  try {
    // Where it listens is the result: stdout, once it listens (scripts wait for this line).
    const result = { url: proxy.url, name, ...(proxy.socketPath === undefined ? {} : { socket: proxy.socketPath }) };
    if (opts.json) run.io.stdout.write(`${JSON.stringify({ version: 1, command: "proxy", ok: true, result })}\n`);
    else run.io.stdout.write(`${proxy.socketPath ?? proxy.url}\n`);
    const where = proxy.socketPath === undefined ? proxy.url : `unix:${proxy.socketPath}`;
    ctx.report.info(`forwarding ${where} → ${proxy.targets.join(", ")}; Ctrl-C to stop`);
    if (proxy.socketPath === undefined)
      ctx.report.info("any local user can use this port while it runs; --unix-socket PATH is yours alone");
    else ctx.report.info(`e.g. curl --unix-socket ${proxy.socketPath} http://localhost/v1/models`);
    await new Promise<void>((resolve) => {
      if (run.signal.aborted) resolve();
      run.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    if (proxy.targets.length > 1) {
      ctx.report.info(
        `answered: ${proxy
          .answered()
          .map((a) => `${a.target}: ${a.answered}`)
          .join(", ")}`,
      );
    }
    return { code: 0 };
  } finally {
    await proxy.close();
  }
}
