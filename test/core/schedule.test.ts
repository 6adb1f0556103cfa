// What schedule writes: no value may carry a control character into a crontab line or a unit file,
// where a line break would start an entry or directive of its own.
import { describe, expect, it } from "vitest";
import { buildSchedule, logFileOf, markerOf, type ScheduleSpec, unitNameOf } from "../../src/core/schedule.js";
import { UsageError } from "../../src/errors.js";

const spec = (over: Partial<ScheduleSpec> = {}): ScheduleSpec => ({
  name: "spotty",
  cron: "*/5 * * * *",
  node: "/usr/bin/node",
  bin: "/opt/tpu-deploy/bin/tpu-deploy.js",
  env: { PATH: "/usr/bin:/bin", HOME: "/home/me", TPU_DEPLOY_HOME: "/home/me/.tpu-deploy" },
  home: "/home/me",
  ...over,
});

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as UsageError).message;
  }
  throw new Error("not refused");
}

describe("buildSchedule refuses control characters", () => {
  const CARRIED = [
    "PATH",
    "TPU_DEPLOY_SKY",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "SKYPILOT_API_SERVER_ENDPOINT",
    "TPU_EMULATOR_HOST",
  ];
  it.each(CARRIED)("in the carried %s", (k) => {
    expect(refusal(() => buildSchedule(spec({ env: { ...spec().env, [k]: "a\nb" } })))).toContain(
      `${k} contains the control character U+000A (line feed)`,
    );
  });

  it.each([
    ["HOME", { home: "/home/me\r" }, "U+000D (carriage return)"],
    ["TPU_DEPLOY_HOME", { env: { ...spec().env, TPU_DEPLOY_HOME: "/s\u0001" } }, "U+0001"],
    ["the path of node", { node: "/usr/bin/node\n" }, "U+000A (line feed)"],
    ["the path of the tpu-deploy script", { bin: "/x\u007f" }, "U+007F (delete)"],
  ] as [string, Partial<ScheduleSpec>, string][])("in %s", (source, over, named) => {
    expect(refusal(() => buildSchedule(spec(over)))).toContain(`${source} contains the control character ${named}`);
  });

  it("names TPU_DEPLOY_HOME's default when it comes from HOME", () => {
    const env = { PATH: "/usr/bin:/bin", HOME: "/h\n" };
    expect(refusal(() => buildSchedule(spec({ env, home: "/home/me" })))).toContain(
      "TPU_DEPLOY_HOME (by default $HOME/.tpu-deploy) contains",
    );
  });

  it("accepts every printable character, including the ones quoting has to handle", () => {
    const odd = "/tmp/a b'c\"d$e%f`g\\h;i&j|k*l?m(n)o{p}q#r~s!t<u>v=w é ✓";
    const s = buildSchedule(
      spec({ home: odd, node: odd, bin: odd, env: { ...spec().env, TPU_DEPLOY_HOME: odd, GOOGLE_CLOUD_PROJECT: odd } }),
    );
    expect(s.cronEntry.split("\n")).toHaveLength(1);
    for (const unit of [s.service, s.timer]) expect(unit.split("\n").every((l) => l === "" || /^(#|\[|[A-Za-z]+=)/.test(l))).toBe(true);
  });

  it("writes the cron expression in its checked form, whatever whitespace it came with", () => {
    const s = buildSchedule(spec({ cron: " */5\t*\n* * *" }));
    expect(s.cron).toBe("*/5 * * * *");
    expect(s.cronEntry.startsWith("*/5 * * * * {")).toBe(true);
    expect(s.timer).toContain("(cron: */5 * * * *)");
  });
});

describe("the deployment name is checked as up checks it, before it is used", () => {
  it.each(["spotty\n* * * * * touch x", "../x", "Spotty", "a b", ""])("%j", (name) => {
    for (const f of [() => buildSchedule(spec({ name })), () => markerOf(name), () => unitNameOf(name), () => logFileOf({}, name)]) {
      expect(refusal(f)).toContain("is not a deployment name: use lowercase letters, digits and -");
    }
  });
});
