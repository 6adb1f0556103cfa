// What each command writes into a deployment's lock (its deadline). Real processes: a fake `sky` on
// TPU_DEPLOY_SKY copies the lock while the command under test holds it.
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type LockInfo, StateStore } from "../../src/adapters/state-store.js";
import { resolveConfig } from "../../src/core/config.js";
import { type DeploymentState, newState } from "../../src/core/state.js";
import { makeTempDir, runCli } from "../helpers/run-cli.js";

const MIN = 60_000;
const tmp = makeTempDir("tpd-lock-holders-");
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let homes = 0;

function recorded(home: string, name: string, phase: DeploymentState["phase"] = "serving"): DeploymentState {
  const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name, tpu: { nodes: 4 } } }], {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const s = { ...newState(r.config), phase };
  new StateStore({ TPU_DEPLOY_HOME: home }).write(s);
  return s;
}

describe("the deadline each command writes into its lock", () => {
  // A fake sky that copies the deployment's lock (held by the command that runs it) and fails.
  const spySky = join(tmp, "sky-spy");
  writeFileSync(spySky, `#!/bin/sh\ncat "$TPU_DEPLOY_HOME"/deployments/*/lock > "$LOCK_SPY" 2>/dev/null\nexit 1\n`);
  chmodSync(spySky, 0o755);

  async function heldFor(argv: string[], setup?: (home: string) => void): Promise<number> {
    const home = join(tmp, `home-${++homes}`);
    const spy = join(tmp, `spy-${homes}.json`);
    setup?.(home);
    await runCli(argv, { env: { TPU_DEPLOY_HOME: home, TPU_DEPLOY_SKY: spySky, LOCK_SPY: spy } });
    expect(existsSync(spy), `sky never ran under ${argv.join(" ")}`).toBe(true);
    const lock = JSON.parse(readFileSync(spy, "utf8")) as LockInfo;
    expect(lock.deadline).toEqual(expect.any(String));
    return Date.parse(lock.deadline ?? "") - Date.parse(lock.startedAt);
  }

  it("up: every zone's launch timeout + the readiness timeout + 30 min (4 zones × 20m + 45m + 30m)", async () => {
    expect(await heldFor(["up", "--nodes", "2"])).toBe((4 * 20 + 45 + 30) * MIN);
  });

  it("up --timeout 2h: the timeout + 30 min for cleanup", async () => {
    expect(await heldFor(["up", "--nodes", "2", "--timeout", "2h"])).toBe((120 + 30) * MIN);
  });

  it("relaunch: the same bound from the recorded config; with --timeout 90m, 90m + 30m", async () => {
    expect(await heldFor(["relaunch", "r1"], (home) => recorded(home, "r1"))).toBe((4 * 20 + 45 + 30) * MIN);
    expect(await heldFor(["relaunch", "r2", "--timeout", "90m"], (home) => recorded(home, "r2"))).toBe((90 + 30) * MIN);
  });

  it("down: 30 min (stop the servers, sky down, verify)", async () => {
    expect(await heldFor(["down", "gone", "-y"])).toBe(30 * MIN);
  });
});
