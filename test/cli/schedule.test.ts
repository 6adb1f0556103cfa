// `tpu-deploy schedule`: the printed cron line really runs `tpu-deploy relaunch NAME` from cron's bare
// environment, and install/uninstall through fake `crontab` and `systemctl` are exact inverses.
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkCron, cronFromEvery, onCalendarFromCron } from "../../src/core/schedule.js";
import { StateStore } from "../../src/adapters/state-store.js";
import { flagName, flagsToConfig, type SpecFlags } from "../../src/cli/config-flags.js";
import { resolveConfig, specOf } from "../../src/core/config.js";
import { newState } from "../../src/core/state.js";
import { type CliResult, makeTempDir, runCli } from "../helpers/run-cli.js";

// As strict as cronie's crontab: a missing final newline or a line that is not an entry is refused.
const FAKE_CRONTAB = `#!/bin/bash
f="$FAKE_DIR/crontab.txt"
echo "crontab $*" >> "$FAKE_DIR/calls.log"
case "$1" in
  -l) [ -f "$f" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$f" ;;
  -r) [ -f "$f" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; rm -f "$f" ;;
  -) t="$(mktemp)"; cat > "$t"
     if [ -s "$t" ] && [ "$(tail -c1 "$t" | od -An -c | tr -d ' ')" != '\\n' ]; then echo 'new crontab file is missing newline before EOF, can'"'"'t install.' >&2; rm -f "$t"; exit 1; fi
     n=0; while IFS= read -r line; do n=$((n+1))
       case "$line" in ''|'#'*) continue ;; esac
       if [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || [[ "$line" =~ ^([^[:space:]]+[[:space:]]+){5}[^[:space:]] ]] || [[ "$line" =~ ^@[a-z]+[[:space:]]+[^[:space:]] ]]; then continue; fi
       echo "\\"-\\":$n: bad minute" >&2; echo "errors in crontab file, can't install." >&2; rm -f "$t"; exit 1
     done < "$t"
     mv "$t" "$f"; echo "crontab: installing new crontab" >&2 ;;
  *) echo "crontab: usage error" >&2; exit 1 ;;
esac
`;

// systemctl --user: enable needs the unit file and links it where its [Install] WantedBy= says.
const FAKE_SYSTEMCTL = `#!/bin/bash
echo "systemctl $*" >> "$FAKE_DIR/calls.log"
[ "$1" = "--user" ] || { echo "fake systemctl: only --user is simulated" >&2; exit 1; }
shift
if [ -n "$FAKE_NO_BUS" ]; then echo "Failed to connect to bus: No medium found" >&2; exit 1; fi
dir="\${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
cmd="$1"; shift
[ "$1" = "--now" ] && shift
u="$1"
case "$cmd" in
  daemon-reload) exit 0 ;;
  enable)
    [ -f "$dir/$u" ] || { echo "Failed to enable unit: Unit file $u does not exist." >&2; exit 1; }
    want="$(sed -n 's/^WantedBy=//p' "$dir/$u")"
    [ -n "$want" ] || { echo "The unit files have no installation config (WantedBy=...)" >&2; exit 1; }
    mkdir -p "$dir/$want.wants"; ln -s "$dir/$u" "$dir/$want.wants/$u"
    echo "Created symlink $dir/$want.wants/$u → $dir/$u." >&2 ;;
  disable)
    for l in "$dir"/*.wants/"$u"; do [ -L "$l" ] && { rm -f "$l"; echo "Removed \\"$l\\"." >&2; }; done; exit 0 ;;
  *) echo "Unknown command verb '$cmd'." >&2; exit 1 ;;
esac
`;

// The "running bin" for the executed-line test: records how it was called.
const FAKE_TPU_DEPLOY = `#!/usr/bin/env node
const { appendFileSync } = require("node:fs");
appendFileSync(process.env.FAKE_RECORD || "/dev/null", JSON.stringify({ argv: process.argv.slice(2), env: process.env }) + "\\n");
console.log("fake tpu-deploy ran: " + process.argv.slice(2).join(" "));
`;

interface Env {
  dir: string;
  home: string;
  tpdHome: string;
  xdg: string;
  fake: string;
  env: Record<string, string>;
  secretsFile: string;
}

let t: Env;

function writeExec(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

function setup(opts: { secrets?: boolean } = {}): Env {
  const dir = makeTempDir("tpd-schedule-");
  const home = join(dir, "home dir"); // a space, to prove the quoting
  const tpdHome = join(home, ".tpu-deploy");
  const xdg = join(dir, "xdg");
  const fake = join(dir, "fakebin");
  for (const d of [home, xdg, fake]) mkdirSync(d, { recursive: true });
  writeExec(join(fake, "crontab"), FAKE_CRONTAB);
  writeExec(join(fake, "systemctl"), FAKE_SYSTEMCTL);
  writeExec(join(fake, "tpu-deploy"), FAKE_TPU_DEPLOY);
  const secretsFile = join(dir, "secrets.env");
  writeFileSync(secretsFile, "HF_TOKEN='hf_from file'\n", { mode: 0o600 });
  const env = {
    PATH: `${fake}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: home,
    TPU_DEPLOY_HOME: tpdHome,
    XDG_CONFIG_HOME: xdg,
    FAKE_DIR: dir,
    GOOGLE_CLOUD_PROJECT: "my-project",
  };
  const flags: SpecFlags = {
    name: "spotty",
    nodes: 4,
    spot: true,
    secret: ["HF_TOKEN"],
    ...(opts.secrets === false ? {} : { secretsFile }),
  };
  const r = resolveConfig([{ label: "flags", keyName: flagName, data: flagsToConfig(flags) }], env);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  new StateStore(env).write(newState(r.config, specOf(r.config)));
  return { dir, home, tpdHome, xdg, fake, env, secretsFile };
}

async function cli(argv: string[], extra: Record<string, string> = {}, self?: { node: string; bin: string }): Promise<CliResult> {
  return await runCli(argv, { env: { ...t.env, ...extra }, cwd: t.dir, ...(self ? { self } : {}) });
}

/** Every file and link under dir, with contents, for exact before/after comparison. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      const st = lstatSync(p);
      const rel = relative(dir, p);
      if (st.isSymbolicLink()) out[rel] = `-> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[`${rel}/`] = "dir";
        walk(p);
      } else out[rel] = readFileSync(p, "utf8");
    }
  };
  walk(dir);
  return out;
}

function recorded(file: string): { argv: string[]; env: Record<string, string> }[] {
  return readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { argv: string[]; env: Record<string, string> });
}

function crontab(): string | null {
  const f = join(t.dir, "crontab.txt");
  return existsSync(f) ? readFileSync(f, "utf8") : null;
}

function calls(): string[] {
  const f = join(t.dir, "calls.log");
  return existsSync(f) ? readFileSync(f, "utf8").trim().split("\n") : [];
}

beforeEach(() => {
  t = setup();
});

afterEach(() => {
  t = undefined as unknown as Env;
});

describe("schedule prints a cron line that runs as printed", () => {
  it("the line, run by bash from cron's bare environment, runs `tpu-deploy relaunch NAME` with PATH and HOME, and leaves the secrets file to relaunch", async () => {
    // The bin that is running is the one the line must call: here the recording fake.
    const r = await cli(["schedule", "spotty", "--every", "5m"], {}, { node: process.execPath, bin: join(t.fake, "tpu-deploy") });
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^# tpu-deploy:relaunch:spotty /);
    const entry = lines[1] ?? "";
    expect(entry.startsWith("*/5 * * * * ")).toBe(true);
    const command = entry.split(" ").slice(5).join(" ");
    expect(command).toContain(process.execPath);
    expect(command).toContain(join(t.fake, "tpu-deploy"));
    expect(command).not.toContain("hf_from"); // the value stays in the file

    // Cron gives a command almost nothing: no PATH beyond the default, no secrets.
    const record = join(t.dir, "record.jsonl");
    // bash as the brief's check, and /bin/sh, which is what cron itself runs.
    for (const shell of ["/bin/bash", "/bin/sh"]) {
      const ran = spawnSync("env", ["-i", `FAKE_RECORD=${record}`, "PATH=/usr/bin:/bin", shell, "-c", command], {
        encoding: "utf8",
        cwd: "/",
      });
      expect(ran.status).toBe(0);
    }
    const calls = recorded(record);
    expect(calls).toHaveLength(2);
    for (const call of calls) {
      expect(call.argv).toEqual(["relaunch", "spotty"]);
      expect(call.env).toMatchObject({
        HOME: t.home,
        TPU_DEPLOY_HOME: t.tpdHome,
        PATH: t.env.PATH,
        GOOGLE_CLOUD_PROJECT: "my-project",
      });
      // relaunch reads server.secretsFile from the deployment's state with the parser `up` used.
      expect(call.env.HF_TOKEN).toBeUndefined();
    }
    // Output goes to the log file under TPU_DEPLOY_HOME.
    expect(readFileSync(join(t.tpdHome, "logs", "relaunch-spotty.log"), "utf8")).toContain("fake tpu-deploy ran: relaunch spotty");
  });

  it("the line never lets a shell read the secrets file: no $(...) runs, `K=a b` runs no b", async () => {
    const pwned = join(t.dir, "PWNED");
    const ranB = join(t.dir, "B_RAN");
    writeExec(join(t.fake, "b"), `#!/bin/sh\ntouch '${ranB}'\n`); // on the PATH the line exports
    writeFileSync(t.secretsFile, `HF_TOKEN=hf\nX=$(touch '${pwned}')\nK=a b\n`, { mode: 0o600 });
    const r = await cli(["schedule", "spotty", "--every", "5m", "--json"], {}, { node: process.execPath, bin: join(t.fake, "tpu-deploy") });
    expect(r.code).toBe(0);
    const { command } = (JSON.parse(r.stdout) as { result: { command: string } }).result;
    const record = join(t.dir, "record.jsonl");
    const ran = spawnSync("env", ["-i", `FAKE_RECORD=${record}`, "PATH=/usr/bin:/bin", "sh", "-c", command], {
      encoding: "utf8",
      cwd: t.dir,
    });
    expect(ran.status).toBe(0);
    const [call] = recorded(record);
    expect(call?.argv).toEqual(["relaunch", "spotty"]);
    expect(existsSync(pwned)).toBe(false);
    expect(existsSync(ranB)).toBe(false);
    expect(call?.env).not.toHaveProperty("X");
    expect(call?.env).not.toHaveProperty("K");
    expect(command).not.toContain(t.secretsFile);
  });

  it("--cron EXPR --json: the entry starts with the expression and sources nothing", async () => {
    t = setup({ secrets: false });
    const r = await cli(["schedule", "spotty", "--cron", "7 */2 * * 1-5", "--json"]);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { result: { cronEntry: string; command: string; cron: string } };
    expect(doc.result.cron).toBe("7 */2 * * 1-5");
    expect(doc.result.cronEntry.startsWith("7 */2 * * 1-5 ")).toBe(true);
    expect(doc.result.command).not.toContain("set -a");
  });

  it("--systemd prints the service and timer: absolute node and bin, and no EnvironmentFile= (systemd would parse the secrets file its own way)", async () => {
    const r = await cli(["schedule", "spotty", "--every", "15m", "--systemd"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`# ${join(t.xdg, "systemd", "user", "tpu-deploy-relaunch-spotty.service")}`);
    expect(r.stdout).not.toContain("EnvironmentFile");
    expect(r.stdout).not.toContain(t.secretsFile);
    expect(r.stdout).toContain(`Environment="HOME=${t.home}"`);
    expect(r.stdout).toMatch(new RegExp(`ExecStart=${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\S+ relaunch spotty\\n`));
    expect(r.stdout).toContain("OnCalendar=*-*-* *:00,15,30,45:00");
    expect(r.stdout).toContain("WantedBy=timers.target");
    expect(r.stdout).not.toContain("hf_from");
  });
});

describe("schedule --install cron / --uninstall: exact inverses through crontab -l / crontab -", () => {
  it("keeps the user's entries; reinstalling replaces ours; uninstall restores the crontab byte for byte", async () => {
    const before = "MAILTO=me@example.com\n# my backups\n0 3 * * * /usr/local/bin/backup --all\n";
    writeFileSync(join(t.dir, "crontab.txt"), before);
    expect((await cli(["schedule", "spotty", "--every", "5m", "--install", "cron"])).code).toBe(0);
    const once = crontab() ?? "";
    expect(once.startsWith(before)).toBe(true);
    expect(once.split("\n").filter((l) => l.startsWith("# tpu-deploy:relaunch:spotty"))).toHaveLength(1);

    expect((await cli(["schedule", "spotty", "--every", "10m", "--install", "cron"])).code).toBe(0);
    const twice = crontab() ?? "";
    expect(twice.split("\n").filter((l) => l.includes(" relaunch spotty"))).toHaveLength(1);
    expect(twice).toContain("*/10 * * * * ");

    const un = await cli(["schedule", "spotty", "--uninstall"]);
    expect(un.code).toBe(0);
    expect(un.stdout).toContain("removed the schedule of spotty: crontab entry");
    expect(crontab()).toBe(before);
  });

  it("from no crontab at all back to no crontab at all", async () => {
    expect(crontab()).toBeNull();
    expect((await cli(["schedule", "spotty", "--every", "1h", "--install", "cron"])).code).toBe(0);
    expect(crontab()).toMatch(/^# tpu-deploy:relaunch:spotty .*\n0 \* \* \* \* .* relaunch spotty\b.*\n$/);
    expect((await cli(["schedule", "spotty", "--uninstall"])).code).toBe(0);
    expect(crontab()).toBeNull();
    expect(calls().filter((c) => c.startsWith("crontab"))).toEqual(["crontab -l", "crontab -", "crontab -l", "crontab -r"]);
  });

  it("leaves another deployment's entry alone", async () => {
    new StateStore(t.env).write({
      ...JSON.parse(readFileSync(join(t.tpdHome, "deployments", "spotty", "state.json"), "utf8")),
      name: "other",
    });
    await cli(["schedule", "other", "--every", "5m", "--install", "cron"]);
    const withOther = crontab();
    await cli(["schedule", "spotty", "--every", "5m", "--install", "cron"]);
    await cli(["schedule", "spotty", "--uninstall"]);
    expect(crontab()).toBe(withOther);
  });
});

describe("schedule --install systemd / --uninstall", () => {
  it("writes the units, reloads, enables --now; uninstall leaves the directory as it was", async () => {
    const mine = join(t.xdg, "systemd", "user");
    mkdirSync(mine, { recursive: true });
    writeFileSync(join(mine, "other.service"), "[Service]\nExecStart=/bin/true\n");
    const before = tree(t.xdg);

    const r = await cli(["schedule", "spotty", "--every", "5m", "--install", "systemd"]);
    expect(r.code).toBe(0);
    const after = tree(t.xdg);
    expect(after["systemd/user/tpu-deploy-relaunch-spotty.service"]).toContain("ExecStart=");
    expect(after["systemd/user/tpu-deploy-relaunch-spotty.timer"]).toContain("OnCalendar=*-*-* *:00,05,10,15,20,25,30,35,40,45,50,55:00");
    expect(after["systemd/user/timers.target.wants/tpu-deploy-relaunch-spotty.timer"]).toMatch(/^-> /);
    expect(calls()).toEqual(["systemctl --user daemon-reload", "systemctl --user enable --now tpu-deploy-relaunch-spotty.timer"]);

    expect((await cli(["schedule", "spotty", "--uninstall"])).code).toBe(0);
    expect(tree(t.xdg)).toEqual(before);
    expect(calls().slice(2)).toEqual([
      "crontab -l",
      "systemctl --user disable --now tpu-deploy-relaunch-spotty.timer",
      "systemctl --user daemon-reload",
    ]);
  });

  it("from no ~/.config/systemd at all back to none", async () => {
    const before = tree(t.xdg);
    expect((await cli(["schedule", "spotty", "--every", "5m", "--install", "systemd"])).code).toBe(0);
    expect((await cli(["schedule", "spotty", "--uninstall"])).code).toBe(0);
    expect(tree(t.xdg)).toEqual(before);
  });

  it("without a user service manager: keeps the files, prints the commands, exit 1", async () => {
    const r = await cli(["schedule", "spotty", "--every", "5m", "--install", "systemd"], { FAKE_NO_BUS: "1" });
    expect(r.code).toBe(1);
    expect(existsSync(join(t.xdg, "systemd", "user", "tpu-deploy-relaunch-spotty.timer"))).toBe(true);
    expect(r.stderr).toContain("systemctl --user daemon-reload");
    expect(r.stderr).toContain("systemctl --user enable --now tpu-deploy-relaunch-spotty.timer");
    expect(r.stderr).toContain("Failed to connect to bus");
  });

  it("uninstall never removes a unit file it did not write", async () => {
    const mine = join(t.xdg, "systemd", "user");
    mkdirSync(mine, { recursive: true });
    writeFileSync(join(mine, "tpu-deploy-relaunch-spotty.service"), "# hand-written\n[Service]\nExecStart=/bin/true\n");
    const r = await cli(["schedule", "spotty", "--uninstall"]);
    expect(r.stdout).toContain("no schedule of spotty is installed");
    expect(readFileSync(join(mine, "tpu-deploy-relaunch-spotty.service"), "utf8")).toContain("hand-written");
  });
});

describe("schedule refuses what would break out of a crontab line or a unit file", () => {
  /** Nothing printed, installed or run: no crontab, no unit directory, no crontab/systemctl call. */
  async function refused(argv: string[], extra: Record<string, string>, self?: { node: string; bin: string }): Promise<string[]> {
    const before = tree(t.xdg);
    const stderrs: string[] = [];
    for (const mode of [[], ["--systemd"], ["--install", "cron"], ["--install", "systemd"]]) {
      const r = await cli([...argv, ...mode], extra, self);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe("");
      stderrs.push(r.stderr);
    }
    expect(crontab()).toBeNull();
    expect(tree(t.xdg)).toEqual(before);
    expect(calls()).toEqual([]);
    return stderrs;
  }

  it.each([
    ["HOME", "\n", "U+000A (line feed)"],
    ["PATH", "\n", "U+000A (line feed)"],
    ["GOOGLE_CLOUD_PROJECT", "\r", "U+000D (carriage return)"],
    ["TPU_DEPLOY_SKY", "\x1b", "U+001B (escape)"],
    ["GOOGLE_APPLICATION_CREDENTIALS", "\t", "U+0009 (tab)"],
    ["SKYPILOT_API_SERVER_ENDPOINT", "\x7f", "U+007F (delete)"],
  ])("%s with %j → exit 2 naming it and the character", async (source, char, named) => {
    const value = `${t.env[source] ?? "/x"}${char}* * * * * touch ${join(t.dir, "PWNED")}`;
    for (const stderr of await refused(["schedule", "spotty", "--every", "5m"], { [source]: value })) {
      expect(stderr).toContain(`${source} contains the control character ${named}`);
    }
  });

  it("TPU_DEPLOY_HOME with a newline (the deployment's state lives there) → exit 2", async () => {
    const tpdHome = `${t.tpdHome}\n* * * * * touch PWNED`;
    const store = new StateStore({ ...t.env, TPU_DEPLOY_HOME: tpdHome });
    store.write(JSON.parse(readFileSync(join(t.tpdHome, "deployments", "spotty", "state.json"), "utf8")));
    for (const stderr of await refused(["schedule", "spotty", "--every", "5m"], { TPU_DEPLOY_HOME: tpdHome })) {
      expect(stderr).toContain("TPU_DEPLOY_HOME contains the control character U+000A (line feed)");
    }
  });

  it.each([
    ["node", "the path of node"],
    ["bin", "the path of the tpu-deploy script"],
  ])("the running %s's path with a newline → exit 2", async (which, source) => {
    const self = { node: process.execPath, bin: join(t.fake, "tpu-deploy") };
    self[which as "node" | "bin"] += "\n* * * * * touch PWNED";
    for (const stderr of await refused(["schedule", "spotty", "--every", "5m"], {}, self)) {
      expect(stderr).toContain(`${source} contains the control character U+000A (line feed)`);
    }
  });

  it("reports every offending value at once", async () => {
    const [stderr] = await refused(["schedule", "spotty", "--every", "5m"], { HOME: "/h\nx", GOOGLE_CLOUD_PROJECT: "p\0" });
    expect(stderr).toContain("HOME contains the control character U+000A (line feed)");
    expect(stderr).toContain("GOOGLE_CLOUD_PROJECT contains the control character U+0000 (NUL)");
  });

  it("a secretsFile with a newline adds no line: the path is not written anywhere", async () => {
    const file = join(t.tpdHome, "deployments", "spotty", "state.json");
    const state = JSON.parse(readFileSync(file, "utf8"));
    state.spec.server.secretsFile = `${t.secretsFile}\n* * * * * touch ${join(t.dir, "PWNED")} #`;
    writeFileSync(file, JSON.stringify(state));
    expect((await cli(["schedule", "spotty", "--every", "5m", "--install", "cron"])).code).toBe(0);
    expect((crontab() ?? "").trimEnd().split("\n")).toHaveLength(2);
    const units = await cli(["schedule", "spotty", "--every", "5m", "--systemd"]);
    expect(units.stdout).not.toContain("touch");
  });

  it("a state whose name is not a deployment name (a newline) → exit 2 before its name reaches a marker, unit or log path", async () => {
    const name = "spotty\n* * * * * touch PWNED";
    const state = JSON.parse(readFileSync(join(t.tpdHome, "deployments", "spotty", "state.json"), "utf8"));
    // Written by hand: the store itself refuses such a name.
    writeFileSync(join(t.tpdHome, "deployments", "spotty", "state.json"), JSON.stringify({ ...state, name }));
    for (const stderr of await refused(["schedule", name, "--every", "5m"], {})) {
      expect(stderr).toContain(`${JSON.stringify(name)} is not a deployment name`);
    }
    expect(existsSync(join(t.tpdHome, "logs"))).toBe(false);
  });

  it.each(["../../evil", "Spotty", "-", "a".repeat(41)])("%j is not a deployment name: exit 2, also for --uninstall", async (name) => {
    await refused(["schedule", name, "--every", "5m"], {});
    const r = await cli(["schedule", name, "--uninstall"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("is not a deployment name: use lowercase letters, digits and -");
    expect(calls()).toEqual([]);
  });
});

describe("schedule input", () => {
  it.each([
    [["schedule", "spotty"], "give one of --every"],
    [["schedule", "spotty", "--every", "5m", "--cron", "* * * * *"], "give one of --every"],
    [["schedule", "spotty", "--every", "7m"], "not an interval cron can keep"],
    [["schedule", "spotty", "--cron", "*/5 * * *"], "must have 5 fields"],
    [["schedule", "spotty", "--cron", "61 * * * *"], "minute: '61' is outside 0-59"],
    [["schedule", "spotty", "--every", "5m", "--install", "launchd"], "--install takes cron or systemd"],
    [["schedule", "spotty", "--uninstall", "--every", "5m"], "--uninstall takes no"],
  ])("%j → exit 2 (%s)", async (argv, message) => {
    const r = await cli(argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(crontab()).toBeNull();
  });

  it("an unknown deployment is not_found, exit 1", async () => {
    const r = await cli(["schedule", "nope", "--every", "5m"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no deployment named nope");
  });

  it.each([
    ["1m", "* * * * *"],
    ["5m", "*/5 * * * *"],
    ["30m", "*/30 * * * *"],
    ["1h", "0 * * * *"],
    ["6h", "0 */6 * * *"],
    ["24h", "0 0 * * *"],
  ])("--every %s → %s", (every, cron) => {
    expect(cronFromEvery(every)).toBe(cron);
  });

  it.each([
    ["* * * * *", "*-*-* *:*:00"],
    ["*/20 * * * *", "*-*-* *:00,20,40:00"],
    ["0 3 * * *", "*-*-* 03:00:00"],
    ["30 1-3 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 01,02,03:30:00"],
    ["0 0 1 */6 *", "*-01,07-01 00:00:00"],
    ["15 4 * * 0,7", "Sun *-*-* 04:15:00"],
  ])("cron %s → OnCalendar=%s", (cron, cal) => {
    expect(onCalendarFromCron(cron)).toBe(cal);
  });

  it("systemd refuses what cron means differently: both day of month and day of week", () => {
    expect(() => onCalendarFromCron("0 0 1 * 1")).toThrow(/cron runs on either, systemd only on both/);
    expect(() => checkCron("0 0 1 * 1")).not.toThrow();
  });

  it("systemd itself accepts every OnCalendar we write, where systemd-analyze exists", () => {
    const has = spawnSync("systemd-analyze", ["--version"]).status === 0;
    for (const c of ["*/5 * * * *", "30 1-3 * * 1-5", "0 0 1 */6 *"]) {
      const cal = onCalendarFromCron(c);
      if (has) execFileSync("systemd-analyze", ["calendar", cal], { stdio: "ignore" });
      expect(cal).toMatch(/^((Sun|Mon|Tue|Wed|Thu|Fri|Sat)(,(Sun|Mon|Tue|Wed|Thu|Fri|Sat))* )?\*-[\d,*]+-[\d,*]+ [\d,*]+:[\d,*]+:00$/);
    }
  });
});
