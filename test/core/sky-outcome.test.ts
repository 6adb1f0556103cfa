import { describe, expect, it } from "vitest";
import { classifyLaunch, type LaunchOutcome, requestIdFrom } from "../../src/core/sky-outcome.js";

// What `sky launch -c sgl --infra gcp/us-east5/us-east5-b -y` prints (stdout and stderr interleaved, as
// the adapter reads them), built from skypilot.md §3 and §8 and what the fake sky reproduces.
const ZONE = "us-east5-b";

const CONSIDERED = [
  "Considered resources (1 node):",
  "------------------------------------------------------------------------------------------------",
  " INFRA              INSTANCE   vCPUs   Mem(GB)   GPUS           COST ($)   CHOSEN",
  "------------------------------------------------------------------------------------------------",
  " GCP (us-east5-b)   TPU-VM     -       -         tpu-v6e-16:1   43.20         ✔",
  "------------------------------------------------------------------------------------------------",
  "⚙︎ Launching on GCP us-east5 (us-east5-b).",
].join("\n");

const FAILOVER_TAIL = (zone: string, reason: string) =>
  [
    "⨯ Failed to provision resources.  View logs: sky logs --provision sgl",
    "sky.exceptions.ResourcesUnavailableError: Failed to provision all possible launchable resources. Relax the task's resource requirements: 1x GCP({'tpu-v6e-16': 1}, accelerator_args={'runtime_version': 'v2-alpha-tpuv6e'})",
    "To keep retrying until the cluster is up, use the `--retry-until-up` flag.",
    "Reasons for provision failures (for details, please check the log above):",
    "INFRA             RESOURCES                                 REASON",
    `GCP (${zone})  [spot](gpus=tpu-v6e-16:1, TPU-VM, ...)  Failed to acquire resources in ${zone} for {...}. ${reason}`,
  ].join("\n");

/** A failed provision: the per-zone warning, then the failover error SkyPilot raises at the end. */
const provisionFailure = (gotCode: string, zone = ZONE) => `${CONSIDERED}\n${gotCode}\n${FAILOVER_TAIL(zone, gotCode)}\n`;

const CODE_8 = `W 06-10 12:00:01 instance_utils.py:1287] Got return code 8 in ${ZONE}: 'There is no more capacity in the zone "${ZONE}"; you can try in another zone where Cloud TPU Nodes are offered (see https://cloud.google.com/tpu/docs/regions) [EID: 0x5cde8a91f0a3b2c1]'`;
const CODE_9 = `Got return code 9 in ${ZONE}: 'Insufficient reserved capacity. Contact customer support to increase your reservation. [EID: 0x1f2e3d4c5b6a7980]'`;
const CODE_3 = `Got return code 3 in ${ZONE}: 'Cloud TPU received a bad request. update is not supported while in state PREEMPTED [EID: 0x0badc0de12345678]'`;
const QUOTA_REGION = `Got return code 'type.googleapis.com/google.rpc.QuotaFailure' in us-east5-a: "Quota 'TPUV6EPreemptiblePerProjectPerRegionForTPUAPI' exhausted. Limit 0 in region us-east5"`;
const QUOTA_ZONE = `Got return code 'type.googleapis.com/google.rpc.QuotaFailure' in ${ZONE}: "Quota 'TPUV6EPreemptiblePerProjectPerZoneForTPUAPI' exhausted. Limit 32 in zone ${ZONE}"`;
const POOL_EXHAUSTED = `Got return code 'ZONE_RESOURCE_POOL_EXHAUSTED' in ${ZONE}: "The zone 'projects/my-proj/zones/${ZONE}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later"`;

const SETUP_FAILED = [
  CONSIDERED,
  "└── Instances are up.",
  "✓ Cluster launched: sgl.  View logs: sky logs --provision sgl",
  "⚙︎ Syncing files.",
  "⚙︎ Job submitted, ID: 1",
  "├── Waiting for task resources on 4 nodes.",
  "└── Job started. Streaming logs... (Ctrl-C to exit log streaming; job will not be killed)",
  "(setup pid=2301) Cloning into 'sglang-jax'...",
  "(setup pid=2301) fatal: Remote branch v9.9.9 not found in upstream origin",
  "ERROR: Job 1's setup failed with return code list: [128, 128, 128, 128]",
  "✓ Job finished (status: FAILED_SETUP).",
  "",
].join("\n");

const USAGE = [
  "Usage: sky launch [OPTIONS] [ENTRYPOINT]...",
  "Try 'sky launch -h' for help.",
  "",
  "Error: No such option: --bogus (Possible options: --cpus, --gpus)",
  "",
].join("\n");

const CATALOG = [
  "sky.exceptions.ResourcesUnavailableError: Catalog does not contain any instances satisfying the request: 1x GCP({'tpu-v6e-12': 1}, accelerator_args={'runtime_version': 'v2-alpha-tpuv6e'}).",
  "To fix: relax or change the resource requirements.",
  "",
  "Hint: sky gpus list to list available accelerators.",
  "      sky check to check the enabled clouds.",
  "",
].join("\n");

const lineOf = (text: string, needle: string) =>
  text
    .split("\n")
    .find((l) => l.includes(needle))
    ?.trim() ?? `(no line with ${needle})`;

describe("classifyLaunch", () => {
  it.each<{ name: string; code: number; output: string; want: LaunchOutcome }>([
    { name: "success", code: 0, output: `${CONSIDERED}\n✓ Job finished (status: SUCCEEDED).\n`, want: { kind: "ok" } },
    {
      name: "code 8: no more capacity in the zone",
      code: 1,
      output: provisionFailure(CODE_8),
      want: { kind: "capacity", zone: ZONE, message: CODE_8 },
    },
    {
      name: "code 9: insufficient reserved capacity",
      code: 1,
      output: provisionFailure(CODE_9),
      want: { kind: "capacity", zone: ZONE, message: CODE_9 },
    },
    {
      name: "code 3: preempted while being created",
      code: 1,
      output: provisionFailure(CODE_3),
      want: { kind: "preempted-creating", zone: ZONE, message: CODE_3 },
    },
    {
      name: "QuotaFailure in region R: the whole region is blocked",
      code: 1,
      output: provisionFailure(QUOTA_REGION, "us-east5-a"),
      want: {
        kind: "quota",
        scope: "region",
        where: "us-east5",
        message: "Quota 'TPUV6EPreemptiblePerProjectPerRegionForTPUAPI' exhausted. Limit 0 in region us-east5",
      },
    },
    {
      name: "QuotaFailure in zone Z: only the zone is blocked",
      code: 1,
      output: provisionFailure(QUOTA_ZONE),
      want: {
        kind: "quota",
        scope: "zone",
        where: ZONE,
        message: `Quota 'TPUV6EPreemptiblePerProjectPerZoneForTPUAPI' exhausted. Limit 32 in zone ${ZONE}`,
      },
    },
    {
      name: "a quota error that names no place: the launch's region",
      code: 1,
      output: `${CONSIDERED}\nsky.exceptions.ResourcesUnavailableError: QUOTA_EXCEEDED: Quota 'TPUS_PER_PROJECT' exceeded.\n`,
      want: {
        kind: "quota",
        scope: "region",
        where: "us-east5",
        message: "sky.exceptions.ResourcesUnavailableError: QUOTA_EXCEEDED: Quota 'TPUS_PER_PROJECT' exceeded.",
      },
    },
    {
      name: "ZONE_RESOURCE_POOL_EXHAUSTED (a string code, no number)",
      code: 1,
      output: provisionFailure(POOL_EXHAUSTED),
      want: {
        kind: "capacity",
        zone: ZONE,
        message:
          "sky.exceptions.ResourcesUnavailableError: Failed to provision all possible launchable resources. Relax the task's resource requirements: 1x GCP({'tpu-v6e-16': 1}, accelerator_args={'runtime_version': 'v2-alpha-tpuv6e'})",
      },
    },
    {
      name: "ResourcesUnavailableError without any code line",
      code: 1,
      output: `${CONSIDERED}\n${FAILOVER_TAIL(ZONE, "Failed to acquire resources in us-east5-b")}\n`,
      want: {
        kind: "capacity",
        zone: ZONE,
        message: lineOf(FAILOVER_TAIL(ZONE, ""), "sky.exceptions.ResourcesUnavailableError"),
      },
    },
    {
      name: "Invalid task YAML",
      code: 1,
      output:
        "ValueError: Invalid task YAML: Additional properties are not allowed ('setpu' was unexpected)\nCheck the documentation at https://docs.skypilot.co/en/latest/reference/yaml-spec.html\n",
      want: {
        kind: "invalid-task",
        message: "ValueError: Invalid task YAML: Additional properties are not allowed ('setpu' was unexpected)",
      },
    },
    {
      name: "Invalid resources YAML",
      code: 1,
      output: "ValueError: Invalid resources YAML: 'accelerator_args' has unknown key 'tpu_topology'\n",
      want: { kind: "invalid-task", message: "ValueError: Invalid resources YAML: 'accelerator_args' has unknown key 'tpu_topology'" },
    },
    {
      name: "InvalidSkyPilotConfigError",
      code: 1,
      output:
        "sky.exceptions.InvalidSkyPilotConfigError: Invalid config YAML (/root/.sky/config.yaml). Check if the file has the correct format: 'use_internal_ip' was unexpected\n",
      want: {
        kind: "invalid-task",
        message:
          "sky.exceptions.InvalidSkyPilotConfigError: Invalid config YAML (/root/.sky/config.yaml). Check if the file has the correct format: 'use_internal_ip' was unexpected",
      },
    },
    {
      name: "Catalog does not contain any instances (raised as ResourcesUnavailableError)",
      code: 1,
      output: CATALOG,
      want: { kind: "invalid-task", message: lineOf(CATALOG, "Catalog does not contain") },
    },
    {
      name: "a stock build and tpu7x-standard-4t (wording inferred)",
      code: 1,
      output: "ValueError: Invalid instance type 'tpu7x-standard-4t' for cloud GCP.\n",
      want: { kind: "invalid-task", message: "ValueError: Invalid instance type 'tpu7x-standard-4t' for cloud GCP." },
    },
    {
      name: "the TPU7x-capable build's Flex-start check (mig_utils.validate_tpu_flex_start_config)",
      code: 1,
      output: "ValueError: Accelerator topology '2x2x4' requires 4 'tpu7x-standard-4t' VMs, but num_nodes is 2.\n",
      want: {
        kind: "invalid-task",
        message: "ValueError: Accelerator topology '2x2x4' requires 4 'tpu7x-standard-4t' VMs, but num_nodes is 2.",
      },
    },
    {
      name: "Compute Engine refusing a placement policy on a tpu7x instance group",
      code: 1,
      output:
        "RuntimeError: Compute Engine refused the instance group for tpu7x-standard-4t: creating a TPU managed instance group with placement policy is not supported. Use workload policy instead.\n",
      want: {
        kind: "invalid-task",
        message:
          "RuntimeError: Compute Engine refused the instance group for tpu7x-standard-4t: creating a TPU managed instance group with placement policy is not supported. Use workload policy instead.",
      },
    },
    {
      name: "No launchable resource found",
      code: 1,
      output:
        "sky.exceptions.ResourcesUnavailableError: No launchable resource found for task sgl.\nTo fix: gcp is not enabled. Run `sky check gcp` to enable it, or change the cloud requirement.\n",
      want: { kind: "invalid-task", message: "sky.exceptions.ResourcesUnavailableError: No launchable resource found for task sgl." },
    },
    {
      name: "an unknown exception: failed, with the exception line",
      code: 1,
      output: `${CONSIDERED}\n└── Instances are up.\nsky.exceptions.CommandError: Command cd ~ && mkdir -p .sky failed with return code 255.\nFailed to run command before rsync.\n`,
      want: {
        kind: "failed",
        exitCode: 1,
        message: "sky.exceptions.CommandError: Command cd ~ && mkdir -p .sky failed with return code 255.",
      },
    },
    {
      name: "a plain Python error",
      code: 1,
      output: "Running on cluster: sgl\nRuntimeError: Failed to get the IP of the head node.\n",
      want: { kind: "failed", exitCode: 1, message: "RuntimeError: Failed to get the IP of the head node." },
    },
    {
      name: "no exception at all: the last lines",
      code: 137,
      output: `${CONSIDERED}\nline a\nline b\nline c\n`,
      want: { kind: "failed", exitCode: 137, message: "line a\nline b\nline c" },
    },
  ])("$name", ({ code, output, want }) => {
    expect(classifyLaunch(code, output, ZONE)).toEqual(want);
  });

  it.each([100, 101, 102, 103])(
    "exit %i (job FAILED / NOT_FINISHED / NOT_FOUND / CANCELLED) is a setup failure with the log tail",
    (code) => {
      const o = classifyLaunch(code, SETUP_FAILED, ZONE);
      expect(o).toMatchObject({ kind: "setup-failed", exitCode: code });
      const message = "message" in o ? o.message : "";
      expect(message).toContain("fatal: Remote branch v9.9.9 not found in upstream origin");
      expect(message).toContain("ERROR: Job 1's setup failed with return code list: [128, 128, 128, 128]");
      expect(message.split("\n").length).toBeLessThanOrEqual(12);
    },
  );

  it("a usage error (exit 2) keeps click's error line", () => {
    const o = classifyLaunch(2, `${USAGE}`, ZONE);
    expect(o.kind).toBe("usage");
    expect("message" in o ? o.message : "").toContain("Error: No such option: --bogus (Possible options: --cpus, --gpus)");
  });

  it("exit 2 is usage even when the text mentions capacity", () => {
    expect(classifyLaunch(2, `${CODE_8}\n${USAGE}`, ZONE).kind).toBe("usage");
  });

  it("exit 0 is ok even when an earlier zone reported a code 8", () => {
    expect(classifyLaunch(0, `${CODE_8}\n✓ Cluster launched: sgl.\n`, ZONE)).toEqual({ kind: "ok" });
  });
});

describe("requestIdFrom", () => {
  const ID = "3f2a1b9c-7d4e-4f60-9a1b-2c3d4e5f6a7b";
  const ID8 = ID.slice(0, 8);

  it("reads the id from the Ctrl-C block", () => {
    const output = [
      CONSIDERED,
      "└── Waiting for the instances to be ready.",
      "⚙︎ Request will continue running asynchronously.",
      `├── View logs: sky api logs ${ID8}`,
      `├── Or, visit: http://127.0.0.1:46580/api/stream?request_id=${ID8}`,
      `└── To cancel the request, run: sky api cancel ${ID8}`,
      "",
      "",
      "Aborted!",
      "",
    ].join("\n");
    expect(requestIdFrom(output)).toBe(ID8);
  });

  it("reads an id that `sky api cancel` accepts from --async output", () => {
    const output = [
      `Submitted sky.launch request: ${ID}`,
      `├── Check logs with: sky api logs ${ID8}`,
      `├── Or, visit: http://127.0.0.1:46580/api/stream?request_id=${ID8}`,
      `└── To cancel the request, run: sky api cancel ${ID8}`,
      "",
    ].join("\n");
    const id = requestIdFrom(output) ?? "";
    expect(id.length).toBeGreaterThanOrEqual(8);
    expect(ID.startsWith(id)).toBe(true);
  });

  it("reads the full id from a bare Submitted line", () => {
    expect(requestIdFrom(`Submitted sky.launch request: ${ID}\n`)).toBe(ID);
  });

  it("is undefined when there is no id", () => {
    expect(requestIdFrom(`${CONSIDERED}\n└── Waiting for the instances to be ready.\nAborted!\n`)).toBeUndefined();
  });
});
