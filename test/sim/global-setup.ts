// vitest global setup of the projects that run real processes (sshd, network namespaces): one preflight
// for the whole run, so a machine that lacks something gets one message, not one failure per test.
import { ensureSimPrerequisites } from "./preflight.js";

export default function setup(): void {
  ensureSimPrerequisites({ command: "npm test" });
}
