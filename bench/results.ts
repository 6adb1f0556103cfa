// What one benchmark run measured, and which targets it met. Every number here comes from a measurement in
// the same run; the report (report.ts) only formats them.
import { type Summary, summarize } from "./stats.js";

export type Unit = "ms" | "s" | "MB" | "count" | "req/s" | "x" | "%";

export interface Metric {
  /** Stable name, e.g. `coordination.ranksStarted`; with `params` it names one measured series. */
  name: string;
  params: Record<string, string | number>;
  unit: Unit;
  values: number[];
  summary: Summary;
  /** How it was measured, in one line. */
  how: string;
}

export interface Target {
  /** The requirement as the issue states it. */
  requirement: string;
  /** What was measured against it. */
  measured: string;
  met: boolean;
  /**
   * Set when a target is missed and the floor measured in the same run (the least any tool can do on this
   * machine) misses it too: the evidence that this machine cannot show the target either way.
   */
  beyondMachine?: string;
}

export class Results {
  readonly metrics: Metric[] = [];
  readonly targets: Target[] = [];
  readonly notes: string[] = [];

  add(name: string, unit: Unit, values: readonly number[], how: string, params: Record<string, string | number> = {}): Metric {
    const m: Metric = { name, params, unit, values: [...values], summary: summarize(values), how };
    this.metrics.push(m);
    const where = Object.entries(params)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    const s = m.summary;
    process.stdout.write(
      `metric ${name}${where ? ` [${where}]` : ""}: median ${round(s.median)} ${unit} (min ${round(s.min)}, max ${round(s.max)}, n=${s.n})\n`,
    );
    return m;
  }

  get(name: string, params: Record<string, string | number> = {}): Metric | undefined {
    return this.metrics.find((m) => m.name === name && Object.entries(params).every(([k, v]) => m.params[k] === v));
  }

  /** `beyondMachine`: the evidence, measured in this run, that no tool could meet it here (used only if missed). */
  target(requirement: string, met: boolean, measured: string, beyondMachine?: string): void {
    const beyond = met ? undefined : beyondMachine;
    this.targets.push({ requirement, met, measured, ...(beyond ? { beyondMachine: beyond } : {}) });
    process.stdout.write(
      `target ${met ? "met   " : "MISSED"} ${requirement}: ${measured}${beyond ? ` (beyond this machine: ${beyond})` : ""}\n`,
    );
  }

  note(text: string): void {
    this.notes.push(text);
    process.stdout.write(`note: ${text}\n`);
  }
}

export function round(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
}
