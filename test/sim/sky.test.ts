// The fake `sky` must be as strict as SkyPilot: click's usage errors (exit 2), SkyPilot's validation
// messages (exit 1), a real multi-host slice with SkyPilot's SSH config and rank order, job exit codes,
// fault injection, Ctrl-C that leaves the request running, teardown and preemption handling.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, startSim, type Sim } from "./sim.js";
import { HELP_TEXTS } from "./sky/help-texts.js";
import type { SimHost } from "./state.js";

let sim: Sim;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function sky(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Run {
  const r = spawnSync("sky", args, {
    cwd: sim.home,
    env: { ...sim.env, ...(opts.env ?? {}) },
    input: opts.input ?? "",
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function writeTask(name: string, body: string): string {
  writeFileSync(join(sim.home, name), body);
  return name;
}

// OpenSSH expands "~" in IdentityFile from the passwd entry, not $HOME: give ssh the sim's home as
// root's home in a private mount namespace, as a user whose home it is would have it.
function sshAsUser(args: string[], timeoutMs = 30_000): Run {
  const r = spawnSync("unshare", ["-m", "sh", "-c", 'mount --bind "$SIM_HOME" /root && exec ssh "$@"', "sh", ...args], {
    env: { ...sim.env, SIM_HOME: sim.home, HOME: "/root" },
    encoding: "utf8",
    timeout: timeoutMs,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const V6E = (acc: string, extra = "") => `name: t
resources:
  infra: gcp/us-east5/us-east5-b
  accelerators: ${acc}
  accelerator_args: {runtime_version: v2-alpha-tpuv6e}
${extra}`;

beforeAll(async () => {
  sim = await startSim();
});

afterAll(async () => {
  await sim?.stop();
});

describe("command line like click", () => {
  it("rejects an unknown option with click's usage text and exit 2", () => {
    const r = sky(["launch", "--bogus", "-c", "x"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      "Usage: sky launch [OPTIONS] [ENTRYPOINT]...\nTry 'sky launch -h' for help.\n\nError: No such option: --bogus (Possible options: --cpus, --gpus)\n",
    );
  });

  it("has the real usage errors for status, down, bad ints and unknown commands", () => {
    expect(sky(["status", "-a"]).stderr).toContain("Error: No such option: -a");
    const ipr = sky(["status", "--ip", "-r", "c"]);
    expect(ipr.code).toBe(2);
    expect(ipr.stderr).toContain("Error: Using --ip or --endpoint(s) with --refresh is notsupported for now.");
    expect(sky(["down"]).code).toBe(2);
    const bad = sky(["launch", "--num-nodes", "two"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("Error: Invalid value for '--num-nodes': 'two' is not a valid integer.");
    const cmd = sky(["nosuchcmd"]);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toContain("Error: No such command 'nosuchcmd'.");
    expect(sky(["launch", "--detach-setup"]).code).toBe(2);
    // click raises a missing option value without context: no usage lines.
    expect(sky(["launch", "-c"])).toMatchObject({ code: 2, stderr: "Error: Option '-c' requires an argument.\n" });
    const unset = sky(["launch", "--secret", "NOT_SET_ANYWHERE", "echo hi"]);
    expect(unset.code).toBe(2);
    expect(unset.stderr).toContain("Error: NOT_SET_ANYWHERE is not set in local environment.");
  });

  it("prints the verbatim help texts", () => {
    const launch = sky(["launch", "--help"]);
    expect(launch.code).toBe(0);
    expect(launch.stdout).toBe(HELP_TEXTS.launch);
    // The embedded copies are the real CLI's texts (docs/upstream/skypilot-cli-help) byte for byte.
    const ref = join(repoRoot(), "docs", "upstream", "skypilot-cli-help");
    const files = readdirSync(ref).filter((f) => f.endsWith(".txt"));
    expect(files.length).toBe(Object.keys(HELP_TEXTS).length);
    for (const [key, text] of Object.entries(HELP_TEXTS)) {
      expect(text).toBe(readFileSync(join(ref, `${key === "" ? "sky" : key.replace(/ /g, "_")}.txt`), "utf8"));
    }
    expect(sky(["api", "cancel", "-h"]).stdout).toContain("Usage: sky api cancel [OPTIONS] [REQUEST_IDS]...");
    const bare = sky([]);
    expect(bare.code).toBe(0);
    expect(bare.stdout.startsWith("Usage: sky [OPTIONS] COMMAND [ARGS]...")).toBe(true);
  });

  it("logs every invocation with its exit code and never a secret value", async () => {
    sky(["status", "--secret", "TOKEN=hunter2"]);
    sky(["launch", "--dryrun", "-y", "--secret", "TOKEN=hunter2", "--gpus", "tpu-v6e-4", "echo hi"]);
    const calls = await sim.skyCalls();
    const text = readFileSync(join(sim.root, "calls", "sky.jsonl"), "utf8");
    expect(text).not.toContain("hunter2");
    const last = calls[calls.length - 1];
    expect(last?.argv).toContain("TOKEN=<redacted>");
    expect(last?.exit).toBe(0);
    expect(calls.some((c) => c.argv[0] === "status" && c.exit === 2)).toBe(true);
  });
});

describe("task validation like SkyPilot", () => {
  it("suggests the intended top-level key", () => {
    const r = sky(["launch", "-y", "-c", "v1", writeTask("bad1.yaml", "rum: echo hi\n")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("ValueError: Invalid task YAML: Instead of 'rum', did you mean 'run'?\n");
  });

  it("rejects unknown accelerator_args keys", () => {
    const r = sky([
      "launch",
      "-y",
      "-c",
      "v2",
      writeTask("bad2.yaml", "resources:\n  accelerators: tpu-v6e-16\n  accelerator_args: {topology: 4x4}\n"),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("ValueError: Invalid resources YAML: Found unsupported field 'topology'.\n");
  });

  it("rejects a TPU that is not in the catalog", async () => {
    const r = sky(["launch", "-y", "-c", "v3", writeTask("bad3.yaml", V6E("tpu-v6e-2"))]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^sky\.exceptions\.ResourcesUnavailableError: Catalog does not contain any instances satisfying the request: 1x GCP\(\{'tpu-v6e-2': 1\}/,
    );
    expect((await sim.state()).clusters.v3).toBeUndefined();
  });

  it("needs every null secret supplied", () => {
    const r = sky(["launch", "-y", "-c", "v4", writeTask("sec.yaml", V6E("tpu-v6e-4", "secrets: {HF_TOKEN: null}\n"))]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "ValueError: Secret variable 'HF_TOKEN' is None. Please set a value for it in task YAML or with --secret flag.",
    );
  });

  it("rejects an instance type with a TPU and spot TPU7x with a MIG", () => {
    const it1 = sky(["launch", "-y", "-c", "v5", "-t", "n2-standard-8", writeTask("it.yaml", V6E("tpu-v6e-4"))]);
    expect(it1.code).toBe(1);
    expect(it1.stderr).toContain("Cannot specify instance type (got 'n2-standard-8') for TPU VM.");
    const v7 =
      "resources: {infra: gcp/us-central1, instance_type: tpu7x-standard-4t, use_spot: true}\nconfig:\n  gcp:\n    managed_instance_group: {run_duration: 3600}\n";
    const r = sky(["launch", "-y", "-c", "v6", writeTask("v7spot.yaml", v7)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Managed Instance Group with DWS does not support spot instances.");
    const noMig = sky([
      "launch",
      "-y",
      "-c",
      "v7",
      writeTask("v7nomig.yaml", "resources: {infra: gcp/us-central1, instance_type: tpu7x-standard-4t}\n"),
    ]);
    expect(noMig.code).toBe(1);
    expect(noMig.stderr).toMatch(/^sky\.exceptions\.InvalidSkyPilotConfigError: .*managed_instance_group\.run_duration/);
  });

  // The TPU7x-capable fork's checks (mig_utils.py validate_tpu_flex_start_config, and its notes on the
  // topology it requires and the placement policy Compute Engine refuses).
  it.each([
    [
      "no accelerator_topology",
      "{run_duration: 3600}",
      "",
      2,
      /^ValueError: .*needs config\.gcp\.managed_instance_group\.accelerator_topology/,
    ],
    [
      "a placement policy",
      "{run_duration: 3600, accelerator_topology: 2x2x2}",
      "    placement_policy: compact\n",
      2,
      /^RuntimeError: .*placement policy is not supported\. Use workload policy instead\./,
    ],
    [
      "a 2D topology",
      "{run_duration: 3600, accelerator_topology: 2x4}",
      "",
      2,
      /^ValueError: 'tpu7x-standard-4t' requires a 3D accelerator topology; got '2x4'\./,
    ],
    [
      "an unsupported shape",
      "{run_duration: 3600, accelerator_topology: 2x2x3}",
      "",
      2,
      /^ValueError: Accelerator topology '2x2x3' is not supported/,
    ],
    [
      "VMs that do not match",
      "{run_duration: 3600, accelerator_topology: 2x2x4}",
      "",
      2,
      /^ValueError: Accelerator topology '2x2x4' requires 4 'tpu7x-standard-4t' VMs, but num_nodes is 2\./,
    ],
  ])("refuses a TPU7x instance group with %s", (_what, mig, extra, nodes, message) => {
    const task = `num_nodes: ${nodes}\nresources: {infra: gcp/us-central1, instance_type: tpu7x-standard-4t}\nconfig:\n  gcp:\n    managed_instance_group: ${mig}\n${extra}`;
    const r = sky(["launch", "-y", "-c", "v7bad", writeTask("v7bad.yaml", task)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
  });
});

describe("a v6e-32 slice", () => {
  const name = "s32";
  let hosts: SimHost[] = [];

  it("launches 8 real hosts and runs setup and run on each with SkyPilot's ranks", async () => {
    const task = writeTask(
      "v6e32.yaml",
      V6E(
        "tpu-v6e-32",
        'envs: {GREETING: hello}\nsecrets: {HF_TOKEN: null}\nsetup: |\n  echo setup-rank=$SKYPILOT_SETUP_NODE_RANK setup-cwd=$(pwd) setup-shell=$- setup-file=$0 unbuffered=$PYTHONUNBUFFERED\nrun: |\n  echo run-cwd=$(pwd) run-file=$0\n  echo run-rank=$SKYPILOT_NODE_RANK n=$SKYPILOT_NUM_NODES g=$GREETING t=$HF_TOKEN host=$(hostname) ip=$(echo "$SKYPILOT_NODE_IPS" | sed -n "$((SKYPILOT_NODE_RANK+1))p")\n',
      ),
    );
    const r = sky(["launch", "-y", "-c", name, task, "--secret", "HF_TOKEN"], { env: { HF_TOKEN: "s3cret" } });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Running on cluster: ${name}`);
    expect(r.stdout).toContain("⚙︎ Launching on GCP us-east5 (us-east5-b).");
    expect(r.stdout).toContain(`✓ Cluster launched: ${name}.  View logs: sky logs --provision ${name}`);
    expect(r.stdout).toContain("✓ Setup detached.");
    expect(r.stdout).toContain("⚙︎ Job submitted, ID: 1");
    expect(r.stdout).toContain("📋 Useful Commands\nJob ID: 1");
    expect(r.stdout).toContain(`Cluster name: ${name}`);

    const s = await sim.state();
    const c = s.clusters[name];
    expect(c?.status).toBe("UP");
    expect(c?.slices).toHaveLength(1);
    const ids = c?.slices[0]?.hostIds ?? [];
    expect(ids).toHaveLength(8);
    hosts = ids.map((id) => s.hosts[id] as SimHost);
    hosts.forEach((h, i) => {
      expect(h.workerId).toBe(i);
    });
    const node = s.nodes[c?.slices[0]?.nodeName ?? ""];
    expect(node?.state).toBe("READY");
    expect(node?.acceleratorType).toBe("v6e-32");
    expect(node?.preemptible).toBe(false);
    expect(node?.labels["skypilot-cluster-name"]).toBe(`${name}-${s.userHash}`);
    expect(node?.name).toMatch(new RegExp(`/nodes/${name}-${s.userHash}-head-[0-9a-z]{1,8}-tpu$`));

    // Ranks: worker 0 first, then the other hosts by external IP as a string.
    const stable = [hosts[0] as SimHost, ...hosts.slice(1).sort((a, b) => (a.externalIp < b.externalIp ? -1 : 1))];
    // hosts.ts shuffles addresses; the sorted order equals worker order with probability 1/5040.
    expect(stable.map((h) => h.workerId)).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    stable.forEach((h, rank) => {
      expect(r.stdout).toContain(`run-rank=${rank} n=8 g=hello t=s3cret host=${h.hostname} ip=${h.internalIp}`);
    });
    expect(r.stdout).toMatch(/\(head, rank=0, pid=\d+\) run-rank=0/);
    // make_task_bash_script: setup and run start in ~/sky_workdir, in an interactive bash reading a
    // /tmp/sky_app_* file; bash's "no job control" lines are skipped.
    const setupLines = r.stdout.split("\n").filter((l) => l.includes("setup-rank="));
    expect(setupLines).toHaveLength(8);
    for (const l of setupLines) {
      expect(l).toMatch(/setup-cwd=\/home\/gcpuser\/sky_workdir setup-shell=\S*i\S* setup-file=\/tmp\/sky_app_\w{8} unbuffered=1$/);
    }
    expect(r.stdout.match(/run-cwd=\/home\/gcpuser\/sky_workdir run-file=\/tmp\/sky_app_\w{8}/g)).toHaveLength(8);
    expect(r.stdout).not.toMatch(/no job control|cannot set terminal process group/);
    expect(r.stdout).toMatch(new RegExp(`\\(worker1, rank=1, pid=\\d+, ip=${stable[1]?.internalIp.replace(/\./g, "\\.")}\\) run-rank=1`));

    // SSH config exactly as SkyPilot writes it.
    const cfg = readFileSync(join(sim.home, ".sky", "generated", "ssh", name), "utf8");
    const block = (alias: string, ip: string) =>
      `# Added by sky (use \`sky stop/down ${name}\` to remove)\nHost ${alias}\n  HostName ${ip}\n  User gcpuser\n` +
      `  IdentityFile ~/.sky/generated/ssh-keys/${name}.key\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n` +
      `  UserKnownHostsFile=/dev/null\n  GlobalKnownHostsFile=/dev/null\n  Port 22\n  SetEnv SKY_CLUSTER_NAME=${name}-${s.userHash}\n\n`;
    expect(cfg).toBe(stable.map((h, i) => block(i === 0 ? name : `${name}-worker${i}`, h.externalIp)).join(""));
    expect(statSync(join(sim.home, ".sky", "generated", "ssh", name)).mode & 0o777).toBe(0o644);
    expect(statSync(join(sim.home, ".sky", "generated", "ssh")).mode & 0o777).toBe(0o700);
    expect(statSync(join(sim.home, ".sky", "generated", "ssh-keys", `${name}.key`)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(sim.home, ".ssh", "config"), "utf8")).toBe(
      "# Added by SkyPilot for ssh config of all clusters\nInclude ~/.sky/generated/ssh/*\n\n",
    );
  });

  it("makes the cluster key as SkyPilot does: RSA-2048, PKCS#1 PEM, no trailing newline, one per user", () => {
    const keyFile = join(sim.home, ".sky", "generated", "ssh-keys", `${name}.key`);
    const key = readFileSync(keyFile, "utf8");
    expect(key.startsWith("-----BEGIN RSA PRIVATE KEY-----\n")).toBe(true);
    expect(key.endsWith("-----END RSA PRIVATE KEY-----")).toBe(true);
    const fp = spawnSync("ssh-keygen", ["-l", "-f", keyFile], { encoding: "utf8" });
    expect(fp.stdout).toMatch(/^2048 SHA256:\S+ .*\(RSA\)\n$/);
  });

  it("leaves the job's driver program on the head node with the task's envs and secrets in plain text", async () => {
    const s = await sim.state();
    const head = s.clusters[name]?.headHostId ?? "";
    const r = await sim.execOnHost(head, "stat -c %a /home/gcpuser/.sky/sky_app/sky_job_1 && cat /home/gcpuser/.sky/sky_app/sky_job_1");
    expect(r.code, r.stderr).toBe(0);
    const [mode, ...body] = r.stdout.split("\n");
    expect(mode).toBe("755");
    expect(body.join("\n")).toContain("sky_env_vars_dict['HF_TOKEN'] = 's3cret'");
    expect(body.join("\n")).toContain("sky_env_vars_dict['GREETING'] = 'hello'");
    // Only the head has it.
    const other = s.clusters[name]?.slices[0]?.hostIds.find((id) => id !== head) ?? "";
    expect((await sim.execOnHost(other, "test -e /home/gcpuser/.sky/sky_app/sky_job_1")).code).toBe(1);
  });

  it("resolves and reaches NAME-worker1 through the generated config", () => {
    const cfgPath = join(sim.home, ".sky", "generated", "ssh", name);
    const w1 = [hosts[0] as SimHost, ...hosts.slice(1).sort((a, b) => (a.externalIp < b.externalIp ? -1 : 1))][1] as SimHost;
    const g = sshAsUser(["-G", "-F", cfgPath, `${name}-worker1`]);
    expect(g.code).toBe(0);
    const lines = g.stdout.split("\n");
    expect(lines).toContain(`hostname ${w1.externalIp}`);
    expect(lines).toContain("user gcpuser");
    expect(lines).toContain("port 22");
    expect(lines).toContain(`identityfile ~/.sky/generated/ssh-keys/${name}.key`);
    const h = sshAsUser(["-F", cfgPath, "-o", "BatchMode=yes", `${name}-worker1`, "hostname"]);
    expect(h.stderr).not.toMatch(/denied|refused|No such file|Could not resolve/i);
    expect(h.code).toBe(0);
    expect(h.stdout.trim()).toBe(w1.hostname);
  });

  it("reports status JSON with SkyPilot's fields", () => {
    const r = sky(["status", "-o", "json", name]);
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as Record<string, unknown>[];
    expect(list).toHaveLength(1);
    const rec = list[0] as Record<string, unknown>;
    // Exactly the reference build's fields: no init_kind / init_status_reason (skypilot-seams.md §1), which
    // only faults.json sky.initKindFields adds.
    expect(Object.keys(rec)).toEqual([
      "name",
      "launched_at",
      "last_use",
      "status",
      "autostop",
      "to_down",
      "owner",
      "metadata",
      "cluster_hash",
      "cluster_ever_up",
      "status_updated_at",
      "user_hash",
      "user_name",
      "config_hash",
      "workspace",
      "last_creation_yaml",
      "last_creation_command",
      "is_managed",
      "last_event",
      "resources_str",
      "resources_str_full",
      "nodes",
      "cloud",
      "region",
      "cpus",
      "memory",
      "accelerators",
      "labels",
      "cluster_name_on_cloud",
      "node_names",
      "priority",
      "priority_class",
    ]);
    expect(rec.status).toBe("UP");
    expect(rec.nodes).toBe(1);
    expect(rec.accelerators).toBe("{'tpu-v6e-32': 1}");
    expect(rec.region).toBe("us-east5");
    expect(rec.autostop).toBe(-1);
    expect(rec.cluster_name_on_cloud).toBeNull();
    expect(rec.last_event).toBeNull();
    expect(String(rec.node_names).split(",")).toHaveLength(8);
    const v = JSON.parse(sky(["status", "-v", "-o", "json", name]).stdout) as Record<string, unknown>[];
    expect(v[0]?.cluster_name_on_cloud).toMatch(new RegExp(`^${name}-[0-9a-f]{8}$`));
    expect(String(v[0]?.last_creation_command)).not.toContain("s3cret");
    const ip = sky(["status", "--ip", name]);
    expect(ip.stdout.trim()).toBe(hosts[0]?.externalIp);
    const missing = sky(["status", "nope"]);
    expect(missing.stdout).toContain("Cluster 'nope' not found.");
  });

  it("reuses the UP cluster, runs exec without setup, and tells job status by exit code", async () => {
    const before = Object.keys((await sim.state()).hosts).length;
    const again = sky(["launch", "-c", name, "-d", "echo again"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`Running on cluster: ${name}`);
    expect(again.stdout).not.toContain("Proceed?");
    expect(Object.keys((await sim.state()).hosts).length).toBe(before);
    const ex = sky(["exec", name, "exit 3"]);
    expect(ex.stdout).toContain(`Submitting job to cluster: ${name}`);
    expect(ex.code).toBe(100);
    const st = sky(["logs", name, "3", "--status"]);
    expect(st.stdout).toBe("Job 3: FAILED\n");
    expect(st.code).toBe(100);
    const q = sky(["queue", name, "-o", "json"]);
    const jobs = JSON.parse(q.stdout.slice(q.stdout.indexOf("{"))) as Record<string, { job_id: number; status: string }[]>;
    expect(jobs[name]?.map((j) => [j.job_id, j.status])).toEqual([
      [3, "FAILED"],
      [2, expect.stringMatching(/SUCCEEDED|RUNNING|SETTING_UP|INIT/)],
      [1, "SUCCEEDED"],
    ]);
    // One failing rank ends the job and SkyPilot kills the others (return code 137).
    const t0 = Date.now();
    const partial = sky(["exec", name, 'if [ "$SKYPILOT_NODE_RANK" = 1 ]; then exit 5; fi; sleep 60']);
    expect(partial.code).toBe(100);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(partial.stdout).toContain(
      "ERROR: Job 4 failed with return code list: [137, 5, 137, 137, 137, 137, 137, 137] (A Worker failed with return code 5, SkyPilot cleaned up the processes on other nodes with return code 137)",
    );
    for (const h of hosts) expect(commandsInNetns(h.netns)).not.toContain("sleep");
  });

  it("tears down hosts, nodes and SSH config with sky down", async () => {
    const r = sky(["down", name, "-y"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Terminating cluster ${name}...done.`);
    const s = await sim.state();
    expect(s.clusters[name]).toBeUndefined();
    expect(Object.values(s.nodes).filter((n) => n.labels["skypilot-cluster-name"]?.startsWith(name))).toEqual([]);
    for (const h of hosts) expect(s.hosts[h.id]?.alive).toBe(false);
    expect(existsSync(join(sim.home, ".sky", "generated", "ssh", name))).toBe(false);
    const again = sky(["down", name, "-y"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("Cluster(s) not found (tip: see `sky status`).");
    const ex = sky(["exec", name, "true"]);
    expect(ex.code).toBe(1);
    expect(ex.stderr).toBe(`sky.exceptions.ClusterDoesNotExist: Cluster '${name}' does not exist.\n`);
  });
});

describe("prompts and shapes", () => {
  it("asks before launching a new cluster and aborts on EOF or 'n'", async () => {
    const task = writeTask("p.yaml", V6E("tpu-v6e-4", "run: echo hi\n"));
    for (const input of ["", "n\n"]) {
      const r = sky(["launch", "-c", "prompted", task], { input });
      expect(r.code).toBe(1);
      expect(r.stdout).toContain("Launching a new cluster 'prompted'. Proceed? [Y/n]: ");
      expect(r.stderr).toBe("Aborted!\n");
    }
    expect((await sim.state()).clusters.prompted).toBeUndefined();
  });

  it("makes one slice of num_nodes VMs without a TPU node for tpu7x", async () => {
    const v7 =
      "num_nodes: 2\nresources: {infra: gcp/us-central1, instance_type: tpu7x-standard-4t}\n" +
      "config:\n  gcp:\n    managed_instance_group: {run_duration: 172800, provision_timeout: 900, accelerator_topology: 2x2x2, accelerator_topology_mode: AUTO_CONNECT}\n" +
      "run: echo rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES\n";
    const r = sky(["launch", "-y", "-c", "v7", writeTask("v7.yaml", v7)]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("⚙︎ Launching on GCP us-central1 (us-central1-c).");
    expect(r.stdout).toContain("rank=1 of 2");
    const s = await sim.state();
    const c = s.clusters.v7;
    expect(c?.accelerator).toBeNull();
    expect(c?.instanceType).toBe("tpu7x-standard-4t");
    expect(c?.slices).toEqual([{ nodeName: null, hostIds: expect.any(Array) }]);
    expect(c?.slices[0]?.hostIds).toHaveLength(2);
    expect(Object.values(s.nodes).some((n) => n.labels["skypilot-cluster-name"] === c?.nameOnCloud)).toBe(false);
    expect(sky(["down", "-y", "v7"]).code).toBe(0);
  });

  it("makes one TPU node per num_nodes and autodowns with --down once the queue is empty", async () => {
    const task = writeTask(
      "two.yaml",
      "num_nodes: 2\nresources: {infra: gcp/us-east5/us-east5-c, accelerators: tpu-v6e-4}\nsetup: sleep 1\nrun: echo rank=$SKYPILOT_NODE_RANK\n",
    );
    const r = sky(["launch", "-y", "-d", "--down", "-c", "two", task]);
    expect(r.code).toBe(0);
    // -d returns while setup still runs.
    expect(r.stdout).not.toContain("rank=0");
    const c = (await sim.state()).clusters.two;
    expect(c?.slices).toHaveLength(2);
    expect(c?.slices.map((sl) => sl.nodeName)).toEqual([
      expect.stringMatching(/-head-[0-9a-z]+-tpu$/),
      expect.stringMatching(/-worker-[0-9a-z]+-tpu$/),
    ]);
    expect(c?.headHostId).toBe(c?.slices[0]?.hostIds[0]);
    const st = JSON.parse(sky(["status", "-o", "json", "two"]).stdout) as { autostop: number; to_down: boolean }[];
    expect(st[0]).toMatchObject({ autostop: 0, to_down: true });
    const end = Date.now() + 60_000;
    while ((await sim.state()).clusters.two !== undefined) {
      if (Date.now() > end) throw new Error("cluster was not autodowned");
      await new Promise((res) => setTimeout(res, 250));
    }
    expect(Object.values((await sim.state()).nodes).filter((n) => n.labels["skypilot-cluster-name"] === c?.nameOnCloud)).toEqual([]);
  });
});

describe("faults", () => {
  it("fails with the TPU code 8 line when the zone has no capacity", async () => {
    await sim.setFaults({ sky: { capacityZones: ["us-east5-b"] } });
    const r = sky(["launch", "-y", "-c", "cap", writeTask("cap.yaml", V6E("tpu-v6e-4", "run: echo hi\n"))]);
    await sim.setFaults({});
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /Got return code 8 in us-east5-b: 'There is no more capacity in the zone "us-east5-b"; you can try in another zone where Cloud TPU Nodes are offered \(see https:\/\/cloud\.google\.com\/tpu\/docs\/regions\) \[EID: 0x[0-9a-f]+\]'/,
    );
    expect(r.stdout).toContain("⨯ Failed to provision resources.  View logs: sky logs --provision cap");
    expect(r.stderr).toMatch(/^sky\.exceptions\.ResourcesUnavailableError: Failed to provision all possible launchable resources\./);
    expect((await sim.state()).clusters.cap).toBeUndefined();
  });

  it("reports a regional quota failure as SkyPilot logs it", async () => {
    await sim.setFaults({ sky: { quota: { zone: "us-east5-a", scope: "region" } } });
    const task = writeTask("q.yaml", "resources:\n  accelerators: tpu-v6e-4\nrun: echo hi\n");
    const r = sky(["launch", "-y", "-c", "quota", "--infra", "gcp/us-east5", "--use-spot", task]);
    await sim.setFaults({});
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      "Got return code 'type.googleapis.com/google.rpc.QuotaFailure' in us-east5-a: \"Quota 'TPUV6EPreemptiblePerProjectPerRegionForTPUAPI' exhausted. Limit 0 in region us-east5\"",
    );
    // The whole region is blocked: no other us-east5 zone is tried.
    expect(r.stdout).not.toContain("(us-east5-b)");
    expect(r.stderr).toContain("Quota 'TPUV6EPreemptiblePerProjectPerRegionForTPUAPI' exhausted. Limit 0 in region us-east5");
  });

  it("logs one code and message per TPU node that could not be made: 'Got return codes 8, 8'", async () => {
    await sim.setFaults({ sky: { capacityZones: ["us-east5-b"] } });
    const r = sky(["launch", "-y", "-c", "cap2", writeTask("cap2.yaml", `num_nodes: 2\n${V6E("tpu-v6e-4", "run: echo hi\n")}`)]);
    await sim.setFaults({});
    expect(r.code).toBe(1);
    const msg = `'There is no more capacity in the zone "us-east5-b"; you can try in another zone where Cloud TPU Nodes are offered \\(see https://cloud\\.google\\.com/tpu/docs/regions\\) \\[EID: 0x[0-9a-f]+\\]'`;
    expect(r.stdout).toMatch(new RegExp(`Got return codes 8, 8 in us-east5-b: ${msg}; ${msg}\n`));
  });

  it("a failing teardown is reported on stdout with exit 0, and the cluster stays listed until --purge", async () => {
    expect(sky(["launch", "-y", "-c", "df", writeTask("df.yaml", V6E("tpu-v6e-4"))]).code).toBe(0);
    await sim.setFaults({ sky: { downFail: { clusters: ["df"] }, refreshDaemonMs: 0 } });
    const nodeName = (await sim.state()).clusters.df?.slices[0]?.nodeName ?? "";
    const r = sky(["down", "-y", "df"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain(
      `googleapiclient error (HttpError): <HttpError 403 when requesting https://tpu.googleapis.com/v2/${nodeName}?alt=json returned "Permission 'tpu.nodes.delete' denied`,
    );
    expect(r.stdout).toContain(
      "Cluster(s) failed. See details above. If you want to ignore the errors and remove the cluster(s) from the status table, use `sky down --purge`.",
    );
    expect(r.stdout).not.toContain("...done.");
    expect((JSON.parse(sky(["status", "-o", "json", "df"]).stdout) as { status: string }[])[0]?.status).toBe("UP");
    expect((await sim.state()).nodes[nodeName]?.state).toBe("READY");

    await sim.setFaults({ sky: { downFail: { clusters: ["df"], kind: "runtime", message: "boom" }, refreshDaemonMs: 0 } });
    const rt = sky(["down", "-y", "df"]);
    expect(rt.code).toBe(0);
    expect(rt.stdout).toContain("Terminating cluster df...failed. \nReason: RuntimeError: boom.\n");

    const purged = sky(["down", "-y", "--purge", "df"]);
    await sim.setFaults({});
    expect(purged.code).toBe(0);
    expect(purged.stdout).toContain(
      "WARNING: Received non-zero exit code from terminating cluster nodes. Make sure resources are manually deleted.",
    );
    expect(purged.stdout).toContain("Terminating cluster df...done.");
    const s = await sim.state();
    expect(s.clusters.df).toBeUndefined();
    // Nothing was deleted on the cloud: the node leaks.
    expect(s.nodes[nodeName]?.state).toBe("READY");
  });

  it("exits 100 when setup fails on the hosts", async () => {
    await sim.setFaults({ sky: { setupFail: true } });
    const r = sky(["launch", "-y", "-c", "sf", writeTask("sf.yaml", V6E("tpu-v6e-4", "setup: echo installing\nrun: echo never\n"))]);
    await sim.setFaults({});
    expect(r.code).toBe(100);
    expect(r.stdout).toContain("ERROR: Job 1's setup failed with return code list: [1]");
    expect(r.stdout).not.toContain("never");
    expect(sky(["logs", "sf", "1", "--status"]).stdout).toBe("Job 1: FAILED_SETUP\n");
    expect(sky(["down", "-y", "sf"]).code).toBe(0);
  });

  it("leaves the request running on Ctrl-C and stops it with sky api cancel", async () => {
    await sim.setFaults({ sky: { hangProvision: true } });
    const child = spawn("sky", ["launch", "-y", "-c", "hang", writeTask("hang.yaml", V6E("tpu-v6e-4", "run: echo hi\n"))], {
      cwd: sim.home,
      env: sim.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number>((r) => child.on("close", (code) => r(code ?? -1)));
    const deadline = Date.now() + 60_000;
    while (!stdout.includes("Launching on GCP") || !(await sim.state()).clusters.hang?.slices.length) {
      if (Date.now() > deadline) throw new Error(`launch never started provisioning: ${stdout}${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGINT");
    const code = await exited;
    expect(code).toBe(1);
    const m = /├── View logs: sky api logs ([0-9a-f]{8})\n/.exec(stdout);
    expect(stdout).toContain("⚙︎ Request will continue running asynchronously.");
    expect(m).not.toBeNull();
    const id8 = m?.[1] ?? "";
    expect(stdout).toContain(`├── Or, visit: http://127.0.0.1:46580/api/stream?request_id=${id8}`);
    expect(stdout).toContain(`└── To cancel the request, run: sky api cancel ${id8}`);
    expect(stderr).toContain("Aborted!");
    const req = JSON.parse(readFileSync(join(sim.root, "requests", `${readRequestId(id8)}.json`), "utf8")) as {
      status: string;
      pid: number;
    };
    expect(req.status).toBe("RUNNING");
    expect(pidAlive(req.pid)).toBe(true);

    const cancel = sky(["api", "cancel", id8]);
    await sim.setFaults({});
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toBe(`Cancelled 1 request: ${readRequestId(id8)}\n`);
    await waitFor(() => !pidAlive(req.pid));
    const status = JSON.parse(sky(["status", "-o", "json", "hang"]).stdout) as { status: string }[];
    expect(status[0]?.status).toBe("INIT");
    expect(sky(["api", "cancel", id8]).stdout).toBe("No requests need to be cancelled.\n");
    expect(sky(["down", "-y", "hang"]).stdout).toContain("Terminating cluster hang...done.");
  });

  it("drops a preempted spot cluster on sky status -r", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 0 } });
    const r = sky(["launch", "-y", "-c", "sp", "--use-spot", writeTask("sp.yaml", V6E("tpu-v6e-8", "run: echo up\n"))]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Launching a spot job that does not automatically recover from preemptions.");
    const nodeName = (await sim.state()).clusters.sp?.slices[0]?.nodeName ?? "";
    expect((await sim.state()).nodes[nodeName]?.preemptible).toBe(true);
    await sim.preempt("sp");
    const st = sky(["status", "-r"]);
    expect(st.code).toBe(0);
    expect(st.stdout).toContain("Cluster terminated on the cloud: sp");
    expect(st.stdout).toContain("No existing clusters.");
    const s = await sim.state();
    expect(s.clusters.sp).toBeUndefined();
    expect(s.nodes[nodeName]).toBeUndefined();
    const logs = sky(["logs", "sp", "1", "--status"]);
    expect(logs.code).toBe(1);
    expect(logs.stderr).toBe("sky.exceptions.ClusterDoesNotExist: Cluster 'sp' does not exist.\n");
  });
});

describe("status refresh like SkyPilot", () => {
  const statusOf = (name: string): Record<string, unknown> | undefined =>
    (JSON.parse(sky(["status", "-o", "json", name]).stdout.replace(/^Cluster\(s\) not found.*\n/, "")) as Record<string, unknown>[])[0];

  it("plain sky status reads the database only; only -r refreshes (the daemon aside)", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 0 } });
    expect(sky(["launch", "-y", "-c", "ro", "--use-spot", writeTask("ro.yaml", V6E("tpu-v6e-4"))]).code).toBe(0);
    const nodeName = (await sim.state()).clusters.ro?.slices[0]?.nodeName ?? "";
    await sim.preempt("ro");
    await new Promise((res) => setTimeout(res, 2500)); // older than the 2 s cache of AUTO refreshes
    const plain = sky(["status"]);
    expect(plain.stdout).toMatch(/\nro\s.*\sUP\s/);
    expect(statusOf("ro")?.status).toBe("UP");
    expect((await sim.state()).nodes[nodeName]?.state).toBe("PREEMPTED");
    const refreshed = sky(["status", "-r", "ro"]);
    expect(refreshed.stdout).not.toMatch(/\nro\s/);
    const s = await sim.state();
    expect(s.clusters.ro).toBeUndefined();
    expect(s.nodes[nodeName]).toBeUndefined();
  });

  it("the API server's daemon refreshes every cluster every refreshDaemonMs", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 1000 } });
    expect(sky(["launch", "-y", "-c", "dm", "--use-spot", writeTask("dm.yaml", V6E("tpu-v6e-4"))]).code).toBe(0);
    await sim.preempt("dm");
    await new Promise((res) => setTimeout(res, 1200));
    expect(sky(["status"]).stdout).not.toMatch(/\ndm\s/);
    expect((await sim.state()).clusters.dm).toBeUndefined();
    await sim.setFaults({});
  });

  it("maps TPU node states as query_instances does and deletes nodes only when all are PREEMPTED", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 0, initKindFields: true } });
    expect(sky(["launch", "-y", "-c", "ns", writeTask("ns.yaml", `num_nodes: 2\n${V6E("tpu-v6e-4")}`)]).code).toBe(0);
    const c = (await sim.state()).clusters.ns;
    const [n0, n1] = (c?.slices ?? []).map((sl) => sl.nodeName ?? "");
    if (!n0 || !n1) throw new Error("no nodes");
    const refresh = () => sky(["status", "-r", "ns"]);
    await sim.setNodeState(n1, "REPAIRING");
    refresh();
    expect(statusOf("ns")).toMatchObject({
      status: "INIT",
      init_kind: "unhealthy",
      init_status_reason: "Cluster is abnormal because 1 of 2 node(s) in unexpected state: INIT. Transitioned to INIT.",
    });
    await sim.setNodeState(n1, "READY");
    refresh();
    expect(statusOf("ns")).toMatchObject({ status: "UP", init_kind: null, init_status_reason: null });
    await sim.setNodeState(n1, "RESTARTING");
    refresh();
    expect(statusOf("ns")?.status).toBe("INIT");
    await sim.setNodeState(n0, "STOPPING");
    await sim.setNodeState(n1, "STOPPING");
    refresh();
    expect(statusOf("ns")?.status).toBe("STOPPED");
    // One node PREEMPTED, one not: nothing is deleted and the cluster is INIT.
    await sim.setNodeState(n0, "PREEMPTED");
    await sim.setNodeState(n1, "READY", { killHosts: false });
    refresh();
    expect(statusOf("ns")?.status).toBe("INIT");
    expect((await sim.state()).nodes[n0]?.state).toBe("PREEMPTED");
    // UNKNOWN counts as gone: the record goes, but the nodes stay on GCP (no delete unless all PREEMPTED).
    await sim.setNodeState(n1, "UNKNOWN");
    const gone = refresh();
    expect(gone.stdout).not.toMatch(/\nns\s/);
    const s = await sim.state();
    expect(s.clusters.ns).toBeUndefined();
    expect(s.nodes[n0]?.state).toBe("PREEMPTED");
    expect(s.nodes[n1]?.state).toBe("UNKNOWN");
    await sim.setFaults({});
  });
});

describe("launch onto an existing INIT cluster", () => {
  const task = (infra: string, acc = "tpu-v6e-4") =>
    `name: t\nresources:\n  infra: ${infra}\n  accelerators: ${acc}\n  accelerator_args: {runtime_version: v2-alpha-tpuv6e}\n`;
  const REPR = "GCP({'tpu-v6e-4': 1}, accelerator_args={'runtime_version': 'v2-alpha-tpuv6e'})";

  it("refuses other zones, regions or resources with SkyPilot's ResourcesMismatchError, exit 1", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 0 } });
    expect(sky(["launch", "-y", "-c", "im", writeTask("im.yaml", task("gcp/us-east5/us-east5-b"))]).code).toBe(0);
    const node = (await sim.state()).clusters.im?.slices[0]?.nodeName ?? "";
    await sim.setNodeState(node, "REPAIRING");
    sky(["status", "-r", "im"]);
    const zone = sky(["launch", "-y", "-c", "im", writeTask("im-a.yaml", task("gcp/us-east5/us-east5-a"))]);
    expect(zone.code).toBe(1);
    expect(zone.stderr).toBe(
      `sky.exceptions.ResourcesMismatchError: Task requested resources ${REPR} in zone 'us-east5-a',but the existing cluster is in zone 'us-east5-b'.\n`,
    );
    const region = sky(["launch", "-y", "-c", "im", writeTask("im-c.yaml", task("gcp/us-central1"))]);
    expect(region.code).toBe(1);
    expect(region.stderr).toBe(
      `sky.exceptions.ResourcesMismatchError: Task requested resources ${REPR} in region 'us-central1', but the existing cluster is in region 'us-east5'.\n`,
    );
    const other = sky(["launch", "-y", "-c", "im", writeTask("im-8.yaml", task("gcp/us-east5", "tpu-v6e-8"))]);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(
      /^sky\.exceptions\.ResourcesMismatchError: Requested resources do not match the existing cluster\.\n {2}Requested:\t\{1x GCP\(\{'tpu-v6e-8': 1\}.*\}\n {2}Existing:\t1x .*\nTo fix: specify a new cluster name, or down the existing cluster first: sky down im\n$/,
    );
    expect((await sim.state()).clusters.im?.status).toBe("INIT");
  });

  it("retries an INIT cluster that was UP in its previous zone only, keeps it on failure, and remakes what is unhealthy there", async () => {
    await sim.setFaults({ sky: { refreshDaemonMs: 0, capacityZones: ["us-east5-b"] } });
    const again = sky(["launch", "-y", "-c", "im", writeTask("im-r.yaml", task("gcp/us-east5"))]);
    expect(again.code).toBe(1);
    expect(again.stdout).toContain("Cluster 'im' (status: INIT) was previously in GCP (us-east5). Restarting.");
    expect(again.stdout).toContain("Got return code 8 in us-east5-b:");
    expect(again.stdout).not.toMatch(/Launching on GCP us-east5 \(us-east5-[ac]\)/);
    const msg = "Failed to launch cluster 'im' (previous status: INIT). To retry launching the cluster, run: sky start im";
    expect(again.stderr).toBe(
      `sky.exceptions.ResourcesUnavailableError: ${msg}\nTo keep retrying until the cluster is up, use the \`--retry-until-up\` flag.\n${msg}\n`,
    );
    expect((await sim.state()).clusters.im?.status).toBe("INIT");

    await sim.setFaults({ sky: { refreshDaemonMs: 0 } });
    const oldNode = (await sim.state()).clusters.im?.slices[0]?.nodeName ?? "";
    const ok = sky(["launch", "-y", "-c", "im", writeTask("im-r.yaml", task("gcp/us-east5"))]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("Cluster 'im' (status: INIT) was previously in GCP (us-east5). Restarting.");
    const s = await sim.state();
    expect(s.clusters.im).toMatchObject({ status: "UP", zone: "us-east5-b" });
    // The REPAIRING node was not reused: a new node was made in the same zone.
    expect(s.clusters.im?.slices[0]?.nodeName).not.toBe(oldNode);
    expect(s.nodes[oldNode]).toBeUndefined();
    expect(sky(["down", "-y", "im"]).code).toBe(0);
  });

  it("a never-UP INIT cluster that fails in its zone is terminated there and provisioned anew with the request", async () => {
    await sim.setFaults({ sky: { hangProvision: true, refreshDaemonMs: 0 } });
    const child = spawn("sky", ["launch", "-y", "-c", "nv", writeTask("nv.yaml", task("gcp/us-east5"))], { cwd: sim.home, env: sim.env });
    const done = new Promise<void>((r) => child.on("close", () => r()));
    await waitFor(() => {
      const c = JSON.parse(readFileSync(join(sim.root, "state.json"), "utf8")) as { clusters: Record<string, { slices: unknown[] }> };
      return (c.clusters.nv?.slices.length ?? 0) > 0;
    }, 60_000);
    expect(sky(["api", "cancel", "-a"]).code).toBe(0);
    child.kill("SIGINT");
    await done;
    const zone0 = (await sim.state()).clusters.nv?.zone ?? "";
    await sim.setFaults({ sky: { capacityZones: [zone0], refreshDaemonMs: 0 } });
    const r = sky(["launch", "-y", "-c", "nv", writeTask("nv.yaml", task("gcp/us-east5"))]);
    await sim.setFaults({});
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Cluster 'nv' (status: INIT) was previously in GCP (us-east5). Restarting.`);
    expect(r.stdout).toContain("Failed to launch cluster 'nv' (previous status: INIT) with the original resources:");
    expect(r.stdout).toContain(`Retrying provisioning with requested resources: 1x ${REPR}`);
    const c = (await sim.state()).clusters.nv;
    expect(c?.status).toBe("UP");
    expect(c?.zone).not.toBe(zone0);
    expect(sky(["down", "-y", "nv"]).code).toBe(0);
  });
});

describe("gcp.ssh_proxy_command", () => {
  it("puts a ProxyCommand line last in every host block, and SkyPilot's own SSH goes through it", async () => {
    const log = join(sim.home, "proxy.log");
    const proxy = join(sim.home, "proxy.py");
    writeFileSync(
      proxy,
      [
        "import socket, sys, threading",
        "host, port, node, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]",
        "open(log, 'a').write(f'{node} {host}:{port}\\n')",
        "s = socket.create_connection((host, port))",
        "def up():",
        "    while (b := sys.stdin.buffer.read1(65536)):",
        "        s.sendall(b)",
        "    s.shutdown(socket.SHUT_WR)",
        "threading.Thread(target=up, daemon=True).start()",
        "while (b := s.recv(65536)):",
        "    sys.stdout.buffer.write(b); sys.stdout.buffer.flush()",
        "",
      ].join("\n"),
    );
    const cmd = `/usr/bin/python3 ${proxy} %h %p %w ${log}`;
    writeFileSync(join(sim.home, ".sky", "config.yaml"), `gcp:\n  ssh_proxy_command: ${JSON.stringify(cmd)}\n`);
    try {
      const r = sky(["launch", "-y", "-c", "px", writeTask("px.yaml", `num_nodes: 2\n${V6E("tpu-v6e-4", "run: hostname\n")}`)]);
      expect(r.code, r.stderr).toBe(0);
      const cfg = readFileSync(join(sim.home, ".sky", "generated", "ssh", "px"), "utf8");
      const blocks = cfg.split("\n\n").filter((b) => b.trim() !== "");
      expect(blocks).toHaveLength(2);
      blocks.forEach((b, i) => {
        const lines = b.split("\n");
        expect(lines[lines.length - 2]).toMatch(/^ {2}SetEnv SKY_CLUSTER_NAME=px-[0-9a-f]{8}$/);
        expect(lines[lines.length - 1]).toBe(`  ProxyCommand /usr/bin/python3 ${proxy} %h %p ${i} ${log}`);
      });
      // The job ran through the proxy (one connection per node, %w filled in).
      const used = readFileSync(log, "utf8");
      expect(used).toMatch(/^0 198\.18\.\d+\.\d+:22$/m);
      expect(used).toMatch(/^1 198\.18\.\d+\.\d+:22$/m);
      const h = sshAsUser(["-F", join(sim.home, ".sky", "generated", "ssh", "px"), "-o", "BatchMode=yes", "px-worker1", "hostname"]);
      expect(h.code, h.stderr).toBe(0);
      expect(
        readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => l.startsWith("1 ")),
      ).toHaveLength(2);
    } finally {
      rmSync(join(sim.home, ".sky", "config.yaml"), { force: true });
    }
    expect(sky(["down", "-y", "px"]).code).toBe(0);
  });
});

// Process names inside one simulated host (pgrep there would see the whole machine's processes).
function commandsInNetns(netns: string): string[] {
  const pids = spawnSync("ip", ["netns", "pids", netns], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((x) => x !== "");
  return pids.map((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      return "";
    }
  });
}

function readRequestId(prefix: string): string {
  const dir = join(sim.root, "requests");
  const f = (spawnSync("ls", [dir], { encoding: "utf8" }).stdout ?? "")
    .split("\n")
    .find((x) => x.startsWith(prefix) && x.endsWith(".json"));
  return (f ?? "").replace(/\.json$/, "");
}

// Alive and not a zombie (a killed detached worker may wait to be reaped).
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
