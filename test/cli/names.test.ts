// Every command that takes a deployment name checks it with the rule `up` uses before any path is built or
// anything is called: `down .. -y` once removed the whole state directory, `down "" -y` (an unset $NAME in a
// script) every deployment's state, and `down ../../important -y` a directory of the user's.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { StateStore } from "../../src/adapters/state-store.js";
import { UsageError } from "../../src/errors.js";
import { makeTempDir, runCli } from "../helpers/run-cli.js";

/** A state home with one deployment, a directory of the user's beside it, and a sky that records any call. */
function world() {
  const root = makeTempDir("tpd-names-");
  const home = join(root, "home");
  const tpdHome = join(home, ".tpu-deploy");
  mkdirSync(join(tpdHome, "deployments", "real"), { recursive: true });
  writeFileSync(join(tpdHome, "deployments", "real", "state.json"), "{}");
  mkdirSync(join(root, "important"));
  writeFileSync(join(root, "important", "data"), "keep me");
  const skyCalls = join(root, "sky-calls");
  const sky = join(root, "sky");
  writeFileSync(sky, `#!/bin/sh\necho "$*" >> '${skyCalls}'\necho '[]'\n`);
  chmodSync(sky, 0o755);
  return { root, home, tpdHome, skyCalls, env: { HOME: home, TPU_DEPLOY_HOME: tpdHome, TPU_DEPLOY_SKY: sky } };
}

const NAMES = ["..", "", ".", "../../important", "../home", "real/..", "Real", "a b"];

const COMMANDS: ((name: string) => string[])[] = [
  (n) => ["down", n, "-y"],
  (n) => ["down", "real", n, "-y"],
  (n) => ["status", n],
  (n) => ["logs", n],
  (n) => ["restart", n],
  (n) => ["relaunch", n],
  (n) => ["watch", n, "--interval", "1s"],
  (n) => ["schedule", n, "--every", "5m"],
  (n) => ["proxy", n],
  (n) => ["doctor", n],
  (n) => ["up", "--name", n, "--dry-run"],
];

describe("a name that is not a deployment name: exit 2 before anything is touched or called", () => {
  it.each(NAMES)("%j, in every command that takes a name", async (name) => {
    const w = world();
    for (const argv of COMMANDS.map((c) => c(name))) {
      const r = await runCli(argv, { env: w.env });
      expect(r.code, `${JSON.stringify(argv)}: ${r.stderr}`).toBe(2);
      expect(r.stderr, JSON.stringify(argv)).toMatch(/is not a deployment name|--name|name the deployment/);
    }
    expect(readdirSync(join(w.tpdHome, "deployments"))).toEqual(["real"]);
    expect(readFileSync(join(w.tpdHome, "deployments", "real", "state.json"), "utf8")).toBe("{}");
    expect(readFileSync(join(w.root, "important", "data"), "utf8")).toBe("keep me");
    expect(existsSync(w.skyCalls)).toBe(false);
  });
});

describe("the state store refuses any path outside its directory", () => {
  it.each(["..", "", ".", "../x", "a/b", "/etc"])("%j: dir, read and remove all throw a usage error", (name) => {
    const w = world();
    const store = new StateStore(w.env);
    expect(() => store.dir(name)).toThrow(UsageError);
    expect(() => store.read(name)).toThrow(UsageError);
    expect(() => store.remove(name)).toThrow(UsageError);
    expect(existsSync(join(w.tpdHome, "deployments", "real", "state.json"))).toBe(true);
    expect(existsSync(dirname(w.tpdHome))).toBe(true);
  });
});
