// What a `sky launch` run means, from its exit code and output (skypilot.md §3 and §8). Pure.

export type LaunchOutcome =
  | { kind: "ok" }
  | { kind: "capacity"; zone: string; message: string }
  | { kind: "quota"; scope: "region" | "zone"; where: string; message: string }
  | { kind: "preempted-creating"; zone: string; message: string }
  | { kind: "setup-failed"; exitCode: number; message: string }
  | { kind: "invalid-task"; message: string }
  | { kind: "usage"; message: string }
  | { kind: "failed"; exitCode: number; message: string };

const RETURN_CODE = /Got return code (\d+) in ([a-z0-9-]+): '(.*)'/;

function lastException(output: string): string | undefined {
  const lines = output.split("\n").filter((l) => /^sky\.exceptions\.\w+: |^\w+Error: /.test(l.trim()));
  return lines.at(-1)?.trim();
}

function tail(output: string, n = 12): string {
  return output.trimEnd().split("\n").slice(-n).join("\n");
}

export function classifyLaunch(exitCode: number, output: string, zone: string): LaunchOutcome {
  if (exitCode === 0) return { kind: "ok" };
  if (exitCode === 2) return { kind: "usage", message: tail(output, 6) };
  if (exitCode >= 100 && exitCode <= 103) {
    return { kind: "setup-failed", exitCode, message: tail(output) };
  }
  const exception = lastException(output) ?? tail(output, 3);
  if (
    /Invalid task YAML|Invalid resources YAML|InvalidSkyPilotConfigError|Invalid instance type|Cannot specify instance type/.test(output) ||
    // The TPU7x-capable build's checks of a Flex-start TPU instance group (docs/upstream/skypilot.md §7).
    /does not support TPU Flex-start|accelerator topology|accelerator_topology|placement policy is not supported/i.test(output)
  ) {
    return { kind: "invalid-task", message: exception };
  }
  if (/QuotaFailure|QUOTA_EXCEEDED|quotaExceeded|Quota '[^']+' exhausted/.test(output)) {
    const m = /Quota '[^']+' exhausted\.[^\n]*? in (region|zone) ([a-z0-9-]+)/.exec(output);
    const scope = m?.[1] === "zone" ? "zone" : "region";
    const where = m?.[2] ?? (scope === "region" ? zone.replace(/-[a-z]$/, "") : zone);
    return { kind: "quota", scope, where, message: m?.[0] ?? exception };
  }
  for (const line of output.split("\n")) {
    const m = RETURN_CODE.exec(line);
    if (!m) continue;
    const code = Number(m[1]);
    if (code === 3 && /PREEMPTED/.test(m[3] ?? "")) return { kind: "preempted-creating", zone: m[2] ?? zone, message: line.trim() };
    if (code === 8 || code === 9) return { kind: "capacity", zone: m[2] ?? zone, message: line.trim() };
  }
  // Before the generic ResourcesUnavailableError below: the optimizer raises that class for these too.
  if (/Catalog does not contain any instances|No launchable resource found/.test(output)) {
    return { kind: "invalid-task", message: exception };
  }
  if (/no more capacity|ZONE_RESOURCE_POOL_EXHAUSTED|insufficientCapacity|Insufficient reserved capacity/.test(output)) {
    return { kind: "capacity", zone, message: exception };
  }
  if (/Failed to provision all possible launchable resources|ResourcesUnavailableError/.test(output)) {
    return { kind: "capacity", zone, message: exception };
  }
  return { kind: "failed", exitCode, message: exception };
}

/** The request id from SkyPilot's "continue running asynchronously" hint or `--async` output. */
export function requestIdFrom(output: string): string | undefined {
  const cancel = /sky api cancel ([0-9a-f-]{8,36})/.exec(output);
  if (cancel) return cancel[1];
  const submitted = /Submitted sky\.launch request: ([0-9a-f-]{8,36})/.exec(output);
  return submitted?.[1];
}
