// The sky.yaml templates: the user's (launch.template, an absolute path by now) or the built-in one of the
// generation, shipped in the package's templates/ directory.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Template } from "../core/plan.js";
import { UsageError } from "../errors.js";

/** The package root: dist/src/adapters/ → ../../.. ; src/adapters/ (tests) → ../.. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "templates"))) return dir;
    dir = dirname(dir);
  }
  throw new Error("cannot find the tpu-deploy package root (templates/)");
}

export function loadTemplate(path: string | undefined, generation: string): Template {
  const file = path ?? join(packageRoot(), "templates", `${generation}.sky.yaml`);
  if (!existsSync(file)) throw new UsageError(`template ${file} does not exist`, { hint: "check launch.template / --template" });
  return { text: readFileSync(file, "utf8"), name: path ?? `templates/${generation}.sky.yaml` };
}
