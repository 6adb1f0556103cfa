// What each command writes into a deployment's lock (its deadline), and what relaunch does when another run
// holds it: busy within the holder's deadline (exit 0), stuck past it (exit 1, so monitoring sees it).
// Real processes: the holders are live `sleep`s, and a fake `sky` on TPU_DEPLOY_SKY copies the lock while
// the command under test holds it.
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type LockInfo, StateStore } from "../../src/adapters/state-store.js";
import { resolveConfig, specOf } from "../../src/core/config.js";
import { type DeploymentState, newState, type Phase, withReplica } from "../../src/core/state.js";
import { makeTempDir, runCli } from "../helpers/run-cli.js";

const MIN = 60_000;
const tmp = makeTempDir("tpd-lock-holders-");
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let homes = 0;

function recorded(home: string, name: string, phase: Phase = "serving"): DeploymentState {
  const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name, tpu: { nodes: 4 } } }], {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  const s = withReplica(newState(r.config, specOf(r.config)), 0, (x) => ({ ...x, phase }));
  new StateStore({ TPU_DEPLOY_HOME: home }).write(s);
  return s;
}

function startTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
}

async function liveHolder(): Promise<ChildProcess & { pid: number }> {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  const pid = child.pid;
  if (!pid) throw new Error("could not start sleep");
  for (let i = 0; i < 500 && !readFileSync(`/proc/${pid}/stat`, "utf8").includes("(sleep)"); i++)
    await new Promise((r) => setTimeout(r, 10));
  return Object.assign(child, { pid });
}

/** A lock held by `pid` as it runs now, since an hour ago, with the deadline given. */
function holdLock(home: string, name: string, pid: number, deadline: Date): void {
  const info: LockInfo = {
    pid,
    host: hostname(),
    command: "tpu-deploy relaunch",
    startedAt: new Date(Date.now() - 60 * MIN).toISOString(),
    procStartTicks: startTicks(pid),
    bootId: readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(),
    deadline: deadline.toISOString(),
  };
  mkdirSync(join(home, "deployments", name), { recursive: true });
  writeFileSync(join(home, "deployments", name, "lock"), JSON.stringify(info));
}

describe("relaunch while another run holds the lock", () => {
  it("within the holder's deadline: busy, exit 0, nothing done", async () => {
    const home = join(tmp, `home-${++homes}`);
    recorded(home, "held");
    const holder = await liveHolder();
    try {
      holdLock(home, "held", holder.pid, new Date(Date.now() + 60 * MIN));
      const r = await runCli(["relaunch", "held", "--json"], { env: { TPU_DEPLOY_HOME: home } });
      expect(r.code).toBe(0);
      const doc = JSON.parse(r.stdout) as { ok: boolean; result: { action: string; message: string } };
      expect(doc.ok).toBe(true);
      expect(doc.result.action).toBe("busy");
      expect(doc.result.message).toContain(`pid ${holder.pid} on ${hostname()}`);
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("past the holder's deadline by more than 5 min: stuck, exit 1, naming the holder; the lock is left alone", async () => {
    const home = join(tmp, `home-${++homes}`);
    recorded(home, "wedged");
    const holder = await liveHolder();
    try {
      const deadline = new Date(Date.now() - 10 * MIN);
      holdLock(home, "wedged", holder.pid, deadline);
      const lockBefore = readFileSync(join(home, "deployments", "wedged", "lock"), "utf8");

      const human = await runCli(["relaunch", "wedged"], { env: { TPU_DEPLOY_HOME: home } });
      expect(human.code).toBe(1);
      expect(human.stdout).toContain(`wedged: deployment wedged looks stuck: tpu-deploy relaunch (pid ${holder.pid} on ${hostname()})`);
      expect(human.stdout).toContain(`past its deadline ${deadline.toISOString()}`);
      expect(human.stderr).toContain(`hint: `);
      expect(human.stderr).toContain(`kill ${holder.pid}`);

      const json = await runCli(["relaunch", "wedged", "--json"], { env: { TPU_DEPLOY_HOME: home } });
      expect(json.code).toBe(1);
      const doc = JSON.parse(json.stdout) as { ok: boolean; error: { code: string; action: string; message: string } };
      expect(doc.ok).toBe(false);
      expect(doc.error).toMatchObject({ code: "locked", action: "stuck" });
      expect(doc.error.message).toContain("looks stuck");

      const all = await runCli(["relaunch", "--all"], { env: { TPU_DEPLOY_HOME: home } });
      expect(all.code).toBe(1);

      expect(readFileSync(join(home, "deployments", "wedged", "lock"), "utf8")).toBe(lockBefore);
      expect(holder.exitCode).toBeNull();
    } finally {
      holder.kill("SIGKILL");
    }
  });
});

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
