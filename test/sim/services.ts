// The sim's long-running servers in one child process (`node dist/test/sim/services.js <SIM_ROOT>`):
// the GCE metadata emulator on 198.18.0.1 and the Cloud TPU API emulator on 127.0.0.1. Running them
// outside the test process keeps them answering while a test blocks its own event loop.
// Prints one JSON line {metadataPort, tpuApiPort} when ready; exits on SIGTERM/SIGINT, when stdin
// closes, or when its parent dies.
import { pathToFileURL } from "node:url";
import { startMetadataServer } from "./metadata-server.js";
import { pidAlive } from "./state.js";
import { startTpuEmulator } from "./tpu-emulator.js";

export interface Services {
  metadataPort: number;
  tpuApiPort: number;
  close(): Promise<void>;
}

export async function startServices(root: string): Promise<Services> {
  const metadata = await startMetadataServer({ root });
  try {
    const tpu = await startTpuEmulator({ root, port: 0 });
    return {
      metadataPort: metadata.port,
      tpuApiPort: tpu.port,
      async close() {
        await Promise.allSettled([metadata.close(), tpu.close()]);
      },
    };
  } catch (e) {
    await metadata.close();
    throw e;
  }
}

async function main(): Promise<void> {
  const root = process.argv[2];
  if (!root) {
    process.stderr.write("usage: services.js <SIM_ROOT>\n");
    process.exit(2);
  }
  const parent = process.ppid;
  const services = await startServices(root);
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(code), 2000);
    force.unref();
    void services.close().finally(() => process.exit(code));
  };
  process.on("SIGTERM", () => stop(0));
  process.on("SIGINT", () => stop(0));
  process.stdin.on("end", () => stop(0));
  process.stdin.on("error", () => stop(0));
  process.stdin.resume();
  setInterval(() => {
    if (process.ppid !== parent || !pidAlive(parent)) stop(0);
  }, 500);
  process.stdout.write(JSON.stringify({ metadataPort: services.metadataPort, tpuApiPort: services.tpuApiPort }) + "\n");
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`services: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
