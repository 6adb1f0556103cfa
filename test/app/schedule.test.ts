// The schedule use cases against an in-memory Scheduler: what ends up in the user's crontab and unit
// directory, and what the user is told to run when systemd cannot be reached.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { CrontabRead, Scheduler, SystemctlResult } from "../../src/adapters/scheduler.js";
import { installCron, installSystemd, uninstallCron, uninstallSystemd } from "../../src/app/schedule.js";
import { buildSchedule } from "../../src/core/schedule.js";
import { TpuDeployError } from "../../src/errors.js";

interface Fake extends Scheduler {
  crontab: CrontabRead;
  files: Map<string, string>;
  systemctlCalls: string[];
  systemctlResult: (args: readonly string[]) => SystemctlResult;
}

function fake(crontab: CrontabRead = { kind: "none" }): Fake {
  const f: Fake = {
    crontab,
    files: new Map(),
    systemctlCalls: [],
    systemctlResult: () => ({ kind: "ok" }),
    readCrontab: () => f.crontab,
    writeCrontab: (text) => {
      f.crontab = text === "" ? { kind: "none" } : { kind: "ok", text };
    },
    systemctl: (args) => {
      f.systemctlCalls.push(args.join(" "));
      return f.systemctlResult(args);
    },
    readUnit: (path) => f.files.get(path),
    writeUnits: (dir, files) =>
      files.map((u) => {
        f.files.set(join(dir, u.name), u.text);
        return join(dir, u.name);
      }),
    removeUnits: (_dir, paths) => {
      for (const p of paths) f.files.delete(p);
    },
    makeLogDir: () => {},
  };
  return f;
}

const sched = (name = "spotty", cron = "*/5 * * * *") =>
  buildSchedule({
    name,
    cron,
    node: "/usr/bin/node",
    bin: "/opt/tpu-deploy/bin/tpu-deploy.js",
    env: { PATH: "/usr/bin:/bin", HOME: "/home/me" },
    home: "/home/me",
  });

const crontabText = (f: Fake) => (f.crontab.kind === "ok" ? f.crontab.text : null);

describe("installCron / uninstallCron", () => {
  it("adds our entry after the user's lines, replaces it on reinstall, and uninstall gives the user's crontab back", () => {
    const mine = "MAILTO=me@example.com\n0 3 * * * /usr/local/bin/backup"; // no final newline
    const f = fake({ kind: "ok", text: mine });
    installCron(f, sched());
    installCron(f, sched("spotty", "0 * * * *"));
    const text = crontabText(f) ?? "";
    expect(text.startsWith(`${mine}\n# tpu-deploy:relaunch:spotty `)).toBe(true);
    expect(text.split("\n").filter((l) => l.includes("relaunch spotty"))).toEqual([expect.stringMatching(/^0 \* \* \* \* /)]);
    expect(uninstallCron(f, "spotty")).toBe(true);
    expect(crontabText(f)).toBe(`${mine}\n`);
    expect(uninstallCron(f, "spotty")).toBe(false);
  });

  it("leaves another deployment's entry alone", () => {
    const f = fake();
    installCron(f, sched("other"));
    const withOther = crontabText(f);
    installCron(f, sched("spotty"));
    uninstallCron(f, "spotty");
    expect(crontabText(f)).toBe(withOther);
  });

  it("no crontab program: install says to install cron or use systemd; uninstall finds nothing to remove", () => {
    const f = fake({ kind: "missing" });
    expect(() => installCron(f, sched())).toThrow(expect.objectContaining({ exitCode: 1, hint: "install cron, or use --install systemd" }));
    expect(uninstallCron(f, "spotty")).toBe(false);
  });

  it("a crontab -l that fails is reported with its exit code and stderr, and nothing is written", () => {
    const f = fake({ kind: "failed", code: 1, stderr: "You (me) are not allowed to use this program (crontab)\n" });
    let err: unknown;
    try {
      installCron(f, sched());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TpuDeployError);
    expect((err as TpuDeployError).message).toBe("crontab -l failed (exit 1): You (me) are not allowed to use this program (crontab)");
    expect(f.crontab.kind).toBe("failed");
  });
});

describe("installSystemd / uninstallSystemd", () => {
  const dir = "/home/me/.config/systemd/user";

  it("writes the service and timer, reloads, enables --now; uninstall disables and removes exactly them", () => {
    const f = fake();
    const r = installSystemd(f, dir, sched());
    expect(r).toEqual({ dir, files: [`${dir}/tpu-deploy-relaunch-spotty.service`, `${dir}/tpu-deploy-relaunch-spotty.timer`] });
    expect(f.systemctlCalls).toEqual(["--user daemon-reload", "--user enable --now tpu-deploy-relaunch-spotty.timer"]);
    f.files.set(`${dir}/other.service`, "[Service]\n");
    expect(uninstallSystemd(f, dir, "spotty")).toEqual(r.files);
    expect([...f.files.keys()]).toEqual([`${dir}/other.service`]);
    expect(f.systemctlCalls.slice(2)).toEqual(["--user disable --now tpu-deploy-relaunch-spotty.timer", "--user daemon-reload"]);
  });

  it("without a user service manager: the files stay and the commands to run come back, with systemctl's first line of stderr", () => {
    const f = fake();
    f.systemctlResult = () => ({ kind: "failed", code: 1, stderr: "Failed to connect to bus: No medium found\nmore\n" });
    const r = installSystemd(f, dir, sched());
    expect(r.manual).toEqual([
      "systemctl --user daemon-reload",
      "systemctl --user enable --now tpu-deploy-relaunch-spotty.timer",
      "# systemctl --user daemon-reload: Failed to connect to bus: No medium found",
    ]);
    expect(f.files.size).toBe(2);
  });

  it("without systemctl at all: the commands, and no stderr line to quote", () => {
    const f = fake();
    f.systemctlResult = () => ({ kind: "missing" });
    expect(installSystemd(f, dir, sched()).manual).toEqual([
      "systemctl --user daemon-reload",
      "systemctl --user enable --now tpu-deploy-relaunch-spotty.timer",
    ]);
  });

  it("never removes or disables a unit file it did not write", () => {
    const f = fake();
    f.files.set(`${dir}/tpu-deploy-relaunch-spotty.service`, "# hand-written\n[Service]\nExecStart=/bin/true\n");
    expect(uninstallSystemd(f, dir, "spotty")).toEqual([]);
    expect(f.files.size).toBe(1);
    expect(f.systemctlCalls).toEqual([]);
  });
});
