// POSTs JSON to a URL (relaunch.webhook), bounded by its own deadline and never tied to the run's signal:
// a "failed" event must still go out when the run was interrupted. Never throws.
export type PostResult = { ok: true; status: number } | { ok: false; status?: number; why: string };

const TIMEOUT_MS = 10_000;

export async function postJson(url: string, body: unknown): Promise<PostResult> {
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": "tpu-deploy" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.arrayBuffer().catch(() => undefined);
    return res.ok ? { ok: true, status: res.status } : { ok: false, status: res.status, why: `answered ${res.status}` };
  } catch (err) {
    const e = err as Error;
    const why =
      e.name === "TimeoutError" ? `no answer within ${TIMEOUT_MS / 1000} s` : e.cause instanceof Error ? e.cause.message : e.message;
    return { ok: false, why };
  }
}
