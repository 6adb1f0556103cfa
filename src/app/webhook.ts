// relaunch.webhook: one POST per relaunch event. A webhook that is down must never stop a relaunch, so
// every failure is only a warning.
import type { AppContext } from "./context.js";

export type WebhookEvent = "started" | "succeeded" | "failed" | "gave_up";

export interface WebhookBody {
  version: 1;
  event: WebhookEvent;
  name: string;
  /** The replica the event is about, and its SkyPilot cluster. */
  replica: number;
  cluster: string;
  attempt: number;
  zone: string | null;
  time: string;
  error?: { code: string; message: string };
}

export async function postWebhook(ctx: AppContext, url: string | undefined, body: Omit<WebhookBody, "version" | "time">): Promise<void> {
  if (!url) return;
  const payload: WebhookBody = { version: 1, ...body, time: ctx.now().toISOString() };
  const r = await ctx.post(url, payload);
  if (!r.ok) ctx.report.warn(`could not POST the ${body.event} event to webhook ${redactUrl(url)}: ${r.why}`);
}

/** Webhook URLs often carry a token in the path or query: show only scheme, host and port. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return "(invalid URL)";
  }
}
