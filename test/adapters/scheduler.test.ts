// The real Scheduler against small crontab and systemctl programs on PATH: how their outcomes are read,
// and that a program that hangs is stopped by the timeout instead of hanging `schedule`.
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createScheduler } from "../../src/adapters/scheduler.js";
import { makeTempDir } from "../helpers/run-cli.js";

function withTools(tools: Record<string, string>): NodeJS.ProcessEnv {
  const dir = makeTempDir("tpd-scheduler-");
  for (const [name, body] of Object.entries(tools)) {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  }
  return { PATH: `${dir}:/usr/bin:/bin`, FAKE_DIR: dir };
}

describe("createScheduler", () => {
  it("reads 'no crontab for' as no crontab, and a missing crontab program as missing", () => {
    expect(createScheduler(withTools({ crontab: 'echo "no crontab for me" >&2; exit 1' })).readCrontab()).toEqual({ kind: "none" });
    expect(createScheduler({ PATH: makeTempDir("tpd-empty-path-") }).readCrontab()).toEqual({ kind: "missing" });
  });

  it("writes through crontab - and removes with crontab -r; a refusal is an error that quotes crontab", () => {
    const env = withTools({
      crontab: 'case "$1" in -l) cat "$FAKE_DIR/tab" ;; -) cat > "$FAKE_DIR/tab" ;; -r) rm "$FAKE_DIR/tab" ;; esac',
    });
    const s = createScheduler(env);
    s.writeCrontab("* * * * * true\n");
    expect(s.readCrontab()).toEqual({ kind: "ok", text: "* * * * * true\n" });
    s.writeCrontab("");
    expect(existsSync(join(env.FAKE_DIR ?? "", "tab"))).toBe(false);
    const refusing = createScheduler(withTools({ crontab: 'echo "errors in crontab file, can\'t install." >&2; exit 1' }));
    expect(() => refusing.writeCrontab("x\n")).toThrow("crontab - failed (exit 1): errors in crontab file, can't install.");
  });

  it("stops a crontab or systemctl that hangs, and says so", () => {
    const s = createScheduler(withTools({ crontab: "exec sleep 30", systemctl: "exec sleep 30" }), { timeoutMs: 300 });
    const started = Date.now();
    expect(s.readCrontab()).toEqual({ kind: "failed", code: null, stderr: "crontab -l did not finish in 0.3s" });
    expect(s.systemctl(["--user", "daemon-reload"])).toMatchObject({ kind: "failed", code: null });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("removes the unit files and the directories left empty, but not a directory something else lives in", () => {
    const root = makeTempDir("tpd-units-");
    const dir = join(root, "systemd", "user");
    const s = createScheduler({});
    const files = s.writeUnits(dir, [
      { name: "a.service", text: "x" },
      { name: "a.timer", text: "y" },
    ]);
    mkdirSync(join(dir, "timers.target.wants"));
    s.removeUnits(dir, files);
    expect(readdirSync(root)).toEqual([]);

    const kept = s.writeUnits(dir, [{ name: "a.service", text: "x" }]);
    writeFileSync(join(dir, "mine.service"), "z");
    s.removeUnits(dir, kept);
    expect(readdirSync(dir)).toEqual(["mine.service"]);
  });
});
