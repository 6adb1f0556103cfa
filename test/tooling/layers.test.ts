// The layers as CONTRIBUTING.md draws them, enforced on the source: cli → app → core, app → adapters,
// adapters → core; never back. Plus: the core does no I/O, and each heavy library has one importer.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const SRC = resolve(import.meta.dirname, "..", "..", "src");

type Layer = "cli" | "app" | "core" | "adapters";

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

function layerOf(file: string): Layer {
  const rel = relative(SRC, file);
  if (rel === "main.ts" || rel.startsWith("cli/")) return "cli";
  if (rel === "errors.ts" || rel.startsWith("core/")) return "core";
  if (rel.startsWith("app/")) return "app";
  if (rel.startsWith("adapters/")) return "adapters";
  throw new Error(`${rel} is in no layer`);
}

/** Every module a file imports: static, type-only and dynamic. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs = [...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/gm), ...text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)];
  return specs.map((m) => m[1] ?? "");
}

const FILES = filesUnder(SRC);
const NEVER: [Layer, Layer, string][] = [
  ["core", "adapters", "the core does no I/O"],
  ["core", "app", "the core knows no use case"],
  ["core", "cli", "the core knows no screen"],
  ["app", "cli", "use cases know no flags or terminal"],
  ["adapters", "app", "an adapter wraps one library, nothing more"],
  ["adapters", "cli", "an adapter knows no terminal"],
];

describe("the layers", () => {
  it("no import goes the wrong way", () => {
    const wrong: string[] = [];
    for (const file of FILES) {
      const from = layerOf(file);
      for (const spec of importsOf(file).filter((s) => s.startsWith("."))) {
        const to = layerOf(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
        const rule = NEVER.find(([a, b]) => a === from && b === to);
        if (rule) wrong.push(`${relative(SRC, file)} imports ${spec}: ${rule[2]}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("the core imports no module that does I/O", () => {
    const io =
      /^node:(fs|fs\/promises|child_process|net|http|https|os|dgram|dns|tls|readline)$|^(execa|ssh2|@google-cloud\/tpu|google-gax|google-auth-library)$/;
    const found = FILES.filter((f) => layerOf(f) === "core").flatMap((f) =>
      importsOf(f)
        .filter((s) => io.test(s))
        .map((s) => `${relative(SRC, f)}: ${s}`),
    );
    expect(found).toEqual([]);
  });

  it.each([
    ["execa", ["adapters/sky.ts"]],
    ["ssh2", ["adapters/ssh/connection.ts", "adapters/ssh/session.ts"]],
    ["@google-cloud/tpu", ["adapters/tpu-api.ts"]],
    ["google-gax", ["adapters/tpu-api.ts"]],
  ])("%s is imported only by its adapter", (lib, want) => {
    const importers = FILES.filter((f) => importsOf(f).includes(lib)).map((f) => relative(SRC, f));
    expect(importers).toEqual(want);
  });

  it("the test would see a wrong arrow (the scanner finds static, type-only and dynamic imports)", () => {
    const text = 'import type { X } from "../cli/io.js";\nconst m = await import("../cli/program.js");\nexport { y } from "./z.js";\n';
    const specs = [
      ...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/gm),
      ...text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g),
    ].map((m) => m[1]);
    expect(specs).toEqual(["../cli/io.js", "./z.js", "../cli/program.js"]);
  });
});
