// `npm run demo`: the whole cycle on the simulated cloud, narrated. Brings up the sim (hosts are network
// namespaces with real sshd; needs root), runs the real `tpu-deploy` binary against it exactly as a user
// would (`up --nodes 2`: two v6e-4 replicas, `status`, chat requests through `proxy` balanced across the
// replicas with how many each one served, `down`), then removes everything.
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { PreflightError, ensureSimPrerequisites } from "./preflight.js";
import { repoRoot, startSim } from "./sim.js";

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

async function main(): Promise<number> {
  try {
    ensureSimPrerequisites({ command: "npm run demo" });
  } catch (err) {
    if (!(err instanceof PreflightError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  const bin = join(repoRoot(), "bin", "tpu-deploy.js");
  say("starting the simulated cloud (fake sky, Cloud TPU API emulator, metadata server, sshd hosts)");
  const sim = await startSim();
  const env = { ...sim.env, TPU_DEPLOY_HOME: join(sim.home, ".tpu-deploy") };
  const tpuDeploy = (args: string[]) => {
    process.stdout.write(`$ tpu-deploy ${args.join(" ")}\n`);
    const r = spawnSync(process.execPath, [bin, ...args], { env, cwd: sim.home, stdio: "inherit" });
    return r.status ?? 1;
  };
  let code = 0;
  try {
    say("the plan first: nothing is touched");
    tpuDeploy(["up", "--nodes", "2", "--dry-run", "-q"]);

    say("up --nodes 2: no v6e slice has 2 hosts, so two replicas of one v6e-4 each, one SkyPilot cluster each, launched in parallel");
    code = tpuDeploy(["up", "--nodes", "2"]);
    if (code !== 0) return code;

    say("status");
    tpuDeploy(["status"]);

    say("10 chat requests through `tpu-deploy proxy` (SSH to each replica's rank 0, least outstanding requests first)");
    const proxy = spawn(process.execPath, [bin, "proxy", "sgl-v6e-2", "--local-port", "0"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let proxyErr = "";
    proxy.stderr.on("data", (b: Buffer) => {
      proxyErr += b.toString();
    });
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      proxy.stdout.on("data", (b: Buffer) => {
        out += b.toString();
        const m = /^(http:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
        if (m?.[1]) resolve(m[1]);
      });
      proxy.on("exit", () => reject(new Error("proxy exited")));
    });
    const ask = () =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "Qwen/Qwen3-8B", messages: [{ role: "user", content: "Say hello from a TPU." }] }),
      });
    const first = await ask();
    process.stdout.write(`POST ${url}/v1/chat/completions → ${first.status}\n${JSON.stringify(await first.json(), null, 2)}\n`);
    const statuses = [first.status];
    for (let i = 1; i < 10; i++) {
      const res = await ask();
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    process.stdout.write(`${statuses.filter((s) => s === 200).length}/10 answered 200\n`);
    proxy.kill("SIGINT");
    await new Promise((r) => proxy.on("exit", r));
    // The proxy says, as it stops, how many requests each replica answered.
    const answered = /answered: (.*)/.exec(proxyErr)?.[1];
    process.stdout.write(`served per replica: ${answered ?? "(the proxy did not say)"}\n`);
    if (statuses.some((s) => s !== 200) || answered === undefined) code = 1;

    say("down: stop the servers, sky down, verify the slice is gone");
    const downCode = tpuDeploy(["down", "sgl-v6e-2", "-y"]);
    return code !== 0 ? code : downCode;
  } finally {
    say("stopping the simulated cloud");
    await sim.stop();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
