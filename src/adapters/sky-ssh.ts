// SkyPilot's per-cluster SSH config (~/.sky/generated/ssh/<cluster>, docs/upstream/skypilot.md §5): read
// here, parsed in core/ssh-config.ts.
import { readFileSync } from "node:fs";
import { join } from "node:path";

export function skySshConfigPath(home: string, cluster: string): string {
  return join(home, ".sky", "generated", "ssh", cluster);
}

/** The file's text, or undefined when SkyPilot has not written it (or removed it). */
export function readSkySshConfig(home: string, cluster: string): string | undefined {
  try {
    return readFileSync(skySshConfigPath(home, cluster), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
