// `npm run demo`: the whole cycle on the simulated cloud, narrated. Brings up the sim (hosts are network
// namespaces with real sshd; needs root), runs the real `tpu-deploy` binary against it exactly as a user
// would (`up --nodes 2`, `status`, a chat request through `proxy`, `down`), then removes everything.
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

    say("up: launch 2 x v6e-4, find the hosts, ranks by TPU worker number, start sglang-jax, wait until it serves");
    code = tpuDeploy(["up", "--nodes", "2"]);
    if (code !== 0) return code;

    say("status");
    tpuDeploy(["status"]);

    say("a chat request through `tpu-deploy proxy` (an SSH tunnel to rank 0)");
    const proxy = spawn(process.execPath, [bin, "proxy", "sgl-v6e-2", "--local-port", "0"], { env, stdio: ["ignore", "pipe", "inherit"] });
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      proxy.stdout.on("data", (b: Buffer) => {
        out += b.toString();
        const m = /^(http:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
        if (m?.[1]) resolve(m[1]);
      });
      proxy.on("exit", () => reject(new Error("proxy exited")));
    });
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "Qwen/Qwen3-8B", messages: [{ role: "user", content: "Say hello from a TPU." }] }),
    });
    process.stdout.write(`POST ${url}/v1/chat/completions → ${res.status}\n${JSON.stringify(await res.json(), null, 2)}\n`);
    proxy.kill("SIGINT");
    await new Promise((r) => proxy.on("exit", r));

    say("down: stop the servers, sky down, verify the slice is gone");
    code = tpuDeploy(["down", "sgl-v6e-2", "-y"]);
    return code;
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
