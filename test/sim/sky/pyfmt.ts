// Python-compatible renderings that SkyPilot's messages are built from: repr() of str/dict/list,
// json.dumps(indent=2) (ASCII-escaped), difflib.get_close_matches and prettytable without borders.

export type PyValue = string | number | boolean | null | undefined | PyValue[] | { [k: string]: PyValue };

export function pyStr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === "\\") out += "\\\\";
    else if (ch === quote) out += `\\${quote}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + quote;
}

export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (typeof v === "string") return pyStr(v);
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : pyFloat(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (typeof v === "object") {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${pyStr(k)}: ${pyRepr(x)}`)
      .join(", ")}}`;
  }
  return String(v);
}

function pyFloat(v: number): string {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return String(v);
}

// str() of a YAML scalar as Python would print it after yaml.safe_load (True, 1.5, None).
export function pyToStr(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "number" && !Number.isInteger(v)) return pyFloat(v);
  return pyRepr(v);
}

// json.dumps(value, indent=2) with Python's default ensure_ascii=True.
export function pyJsonDumps(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// json.dumps(value) without indent: ", " and ": " separators.
export function pyJsonFlat(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pyJsonFlat).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${pyJsonDumps(k)}: ${pyJsonFlat(v)}`)
      .join(", ")}}`;
  }
  return pyJsonDumps(value ?? null);
}

// difflib.SequenceMatcher(None, a, b).ratio() for short strings (no junk heuristics apply below 200 chars).
export function seqRatio(a: string, b: string): number {
  const la = a.length;
  const lb = b.length;
  if (la + lb === 0) return 1;
  const b2j = new Map<string, number[]>();
  for (let j = 0; j < lb; j++) {
    const ch = b[j] as string;
    const list = b2j.get(ch);
    if (list) list.push(j);
    else b2j.set(ch, [j]);
  }
  const longest = (alo: number, ahi: number, blo: number, bhi: number): [number, number, number] => {
    let besti = alo;
    let bestj = blo;
    let bestsize = 0;
    let j2len = new Map<number, number>();
    for (let i = alo; i < ahi; i++) {
      const next = new Map<number, number>();
      for (const j of b2j.get(a[i] as string) ?? []) {
        if (j < blo) continue;
        if (j >= bhi) break;
        const k = (j2len.get(j - 1) ?? 0) + 1;
        next.set(j, k);
        if (k > bestsize) {
          besti = i - k + 1;
          bestj = j - k + 1;
          bestsize = k;
        }
      }
      j2len = next;
    }
    return [besti, bestj, bestsize];
  };
  let matches = 0;
  const queue: [number, number, number, number][] = [[0, la, 0, lb]];
  while (queue.length > 0) {
    const [alo, ahi, blo, bhi] = queue.pop() as [number, number, number, number];
    const [i, j, k] = longest(alo, ahi, blo, bhi);
    if (k > 0) {
      matches += k;
      if (alo < i && blo < j) queue.push([alo, i, blo, j]);
      if (i + k < ahi && j + k < bhi) queue.push([i + k, ahi, j + k, bhi]);
    }
  }
  return (2 * matches) / (la + lb);
}

// difflib.get_close_matches(word, possibilities, n, cutoff): best first, ties broken by the larger string.
export function getCloseMatches(word: string, possibilities: Iterable<string>, n = 3, cutoff = 0.6): string[] {
  const scored: [number, string][] = [];
  for (const x of possibilities) {
    const r = seqRatio(x, word);
    if (r >= cutoff) scored.push([r, x]);
  }
  scored.sort((p, q) => (q[0] !== p[0] ? q[0] - p[0] : q[1] < p[1] ? -1 : q[1] > p[1] ? 1 : 0));
  return scored.slice(0, n).map((p) => p[1]);
}

// SkyPilot's log_utils.create_table: prettytable, no border, left-aligned, no left and 2-space right padding.
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(displayWidth(h), ...rows.map((r) => displayWidth(r[i] ?? ""))));
  const line = (cells: string[]) => cells.map((c, i) => c + " ".repeat((widths[i] ?? 0) - displayWidth(c)) + "  ").join("");
  return [line(header), ...rows.map(line)].join("\n");
}

function displayWidth(s: string): number {
  return [...s].length;
}

// pendulum's diff_for_humans as SkyPilot shortens it (log_utils.readable_time_duration).
export function timeAgo(startSec: number, nowMs = Date.now()): string {
  const secs = Math.max(0, Math.floor(nowMs / 1000 - startSec));
  const unit = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"} ago`;
  if (secs < 10) return "a few secs ago";
  if (secs < 60) return unit(secs, "sec");
  if (secs < 3600) return unit(Math.floor(secs / 60), "min");
  if (secs < 86400) return unit(Math.floor(secs / 3600), "hr");
  return unit(Math.floor(secs / 86400), "day");
}
