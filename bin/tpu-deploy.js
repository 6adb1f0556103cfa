#!/usr/bin/env node
// Runs the built CLI (npm run build compiles src/ to dist/). Ctrl-C and SIGTERM abort the run's signal;
// the command cleans up and exits 130. A second Ctrl-C exits at once.
import { run } from "../dist/src/main.js";

const controller = new AbortController();
let interrupted = 0;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    interrupted += 1;
    if (interrupted > 1) process.exit(130);
    process.stderr.write(`\ntpu-deploy: ${sig === "SIGINT" ? "interrupted" : "terminated"}; cleaning up (again to quit at once)\n`);
    controller.abort(new Error(sig));
  });
}
process.exitCode = await run(process.argv.slice(2), undefined, controller.signal);
