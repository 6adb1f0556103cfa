import { openProxy } from "../../app/proxy.js";
import { checkName } from "../../core/paths.js";
import { UsageError } from "../../errors.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function proxyCommand(opts: OutputFlags & { localPort?: string }, args: string[], run: RunContext): Promise<CommandResult> {
  const name = checkName(args[0] ?? "");
  const localPort = opts.localPort === undefined ? 0 : Number(opts.localPort);
  if (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535)
    throw new UsageError(`--local-port must be 0..65535, got ${opts.localPort}`);
  const ctx = appContext(run, opts);
  const proxy = await openProxy(ctx, name, { localPort });
  try {
    // The URL is the result: stdout, once the listener is bound (scripts wait for this line).
    if (opts.json) run.io.stdout.write(`${JSON.stringify({ version: 1, command: "proxy", ok: true, result: { url: proxy.url, name } })}\n`);
    else run.io.stdout.write(`${proxy.url}\n`);
    run.io.stderr.write(`forwarding ${proxy.url} → ${proxy.target}; Ctrl-C to stop\n`);
    await new Promise<void>((resolve) => {
      if (run.signal.aborted) resolve();
      run.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    return { code: 0 };
  } finally {
    await proxy.close();
  }
}
