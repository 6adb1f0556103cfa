// relaunch.webhook: one POST per relaunch event. A webhook that is down must never stop a relaunch,
// so every failure is only a warning, and each POST is bounded by its own 10 s deadline.
import type { AppContext } from "./context.js";

export type WebhookEvent = "started" | "succeeded" | "failed" | "gave_up";

export interface WebhookBody {
  version: 1;
  event: WebhookEvent;
  name: string;
  attempt: number;
  zone: string | null;
  time: string;
  error?: { code: string; message: string };
}

const TIMEOUT_MS = 10_000;

export async function postWebhook(ctx: AppContext, url: string | undefined, body: Omit<WebhookBody, "version" | "time">): Promise<void> {
  if (!url) return;
  const payload: WebhookBody = { version: 1, ...body, time: ctx.now().toISOString() };
  try {
    // Not the run's signal: a "failed" event must still go out when the run was interrupted.
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": "tpu-deploy" },
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.arrayBuffer().catch(() => undefined);
    if (!res.ok) ctx.report.warn(`webhook ${redact(url)} answered ${res.status} to the ${body.event} event`);
  } catch (err) {
    const e = err as Error;
    const why =
      e.name === "TimeoutError" ? `no answer within ${TIMEOUT_MS / 1000} s` : e.cause instanceof Error ? e.cause.message : e.message;
    ctx.report.warn(`could not POST the ${body.event} event to webhook ${redact(url)}: ${why}`);
  }
}

/** Webhook URLs often carry a token in the path or query: show only scheme, host and port. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return "(invalid URL)";
  }
}
