// Secret values out of text that leaves tpu-deploy: sglang-jax echoes its API key in /get_server_info and
// logs it (docs/upstream/hostkeys-sglang-facts.md §B1). Each configured value becomes [REDACTED], and so does
// the value of any `api_key='…'` / `"api_key": "…"`, whose key the proxy may not know. Pure.
import { InternalError } from "../errors.js";

export const REDACTED = "[REDACTED]";
/** A shorter value would also match ordinary text (and redacting it would reveal it); config refuses such secrets. */
export const MIN_SECRET_LENGTH = 8;

export interface StreamRedactor {
  /** Redacted text that is safe to send now; the tail that might start a secret is held back. */
  push(chunk: string): string;
  /** Everything still held back, redacted. */
  end(): string;
}

export interface ByteStreamRedactor {
  push(chunk: Uint8Array): Buffer;
  end(): Buffer;
}

// Python's repr of ServerArgs (either quote), and JSON. A value may hold escaped quotes.
const PYTHON_FIELD = String.raw`api_key[ \t]*=[ \t]*(?:'(?:[^'\\\n]|\\[\s\S])+'|"(?:[^"\\\n]|\\[\s\S])+")`;
const JSON_FIELD = String.raw`"api_key"[ \t\r\n]*:[ \t\r\n]*"(?:[^"\\]|\\[\s\S])+"`;
// The same fields, not yet closed at the end of what arrived: hold them back until they close.
const OPEN_FIELD = [
  /api_key[ \t]*(?:=[ \t]*(?:'(?:[^'\\\n]|\\[\s\S])*\\?|"(?:[^"\\\n]|\\[\s\S])*\\?)?)?$/,
  /"api_key"[ \t\r\n]*(?::[ \t\r\n]*(?:"(?:[^"\\]|\\[\s\S])*\\?)?)?$/,
];
/** How a field starts: a chunk that ends in part of one is held back. */
const FIELD_STARTS = ['"api_key"', "api_key"];
/** An unclosed field longer than this is let through (only its configured value is still redacted). */
const OPEN_FIELD_WINDOW = 4096;

/** Redacts whole texts (a log, a buffered body). Throws for a value shorter than MIN_SECRET_LENGTH. */
export function redactor(values: readonly string[]): (text: string) => string {
  const make = streamEngine(literalsOf(values));
  return (text) => {
    const s = make();
    return s.push(text) + s.end();
  };
}

/** Redacts text that arrives in chunks: a secret split across chunks is still caught. */
export function streamRedactor(values: readonly string[]): StreamRedactor {
  return streamEngine(literalsOf(values))();
}

/**
 * The same over bytes, for HTTP bodies: works on latin1 views (one char per byte), so UTF-8 split across
 * chunks and bytes that are not UTF-8 pass through unchanged; values match by their UTF-8 bytes.
 */
export function byteStreamRedactor(values: readonly string[]): ByteStreamRedactor {
  const asBytes = literalsOf(values).map((v) => Buffer.from(v, "utf8").toString("latin1"));
  const s = streamEngine(asBytes)();
  return {
    push: (chunk) => Buffer.from(s.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1")), "latin1"),
    end: () => Buffer.from(s.end(), "latin1"),
  };
}

/** Each value, and its JSON-escaped form when that differs (a body is usually JSON). */
function literalsOf(values: readonly string[]): string[] {
  const out = new Set<string>();
  for (const v of values) {
    if ([...v].length < MIN_SECRET_LENGTH) {
      // Never the value itself in the message: it is a secret.
      throw new InternalError(`a secret of ${[...v].length} characters cannot be redacted safely (at least ${MIN_SECRET_LENGTH})`);
    }
    out.add(v);
    out.add(JSON.stringify(v).slice(1, -1));
  }
  return [...out];
}

function streamEngine(literals: readonly string[]): () => StreamRedactor {
  // Longest first: at one position the longer of two overlapping values wins.
  const sorted = [...literals].sort((a, b) => b.length - a.length);
  const source = [...sorted.map(escapeRegExp), PYTHON_FIELD, JSON_FIELD].join("|");
  const starts = [...sorted, ...FIELD_STARTS];
  const longest = Math.max(...starts.map((s) => s.length));
  /** The longest tail of buf (shorter than any value) that could be the start of a value or a field. */
  const heldTail = (buf: string): number => {
    for (let k = Math.min(buf.length, longest - 1); k > 0; k--) {
      const tail = buf.slice(buf.length - k);
      if (starts.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  };
  return () => {
    const re = new RegExp(source, "g");
    let carry = "";
    const step = (chunk: string, final: boolean): string => {
      const buf = carry + chunk;
      let cut = buf.length;
      if (!final) {
        // At most the longest value minus one character is held, and only when it could begin one, so an
        // SSE event goes out whole unless it ends in what may be the start of a secret.
        cut = buf.length - heldTail(buf);
        const open = openFieldStart(buf);
        if (open !== undefined) cut = Math.min(cut, open);
      }
      let out = "";
      let pos = 0;
      re.lastIndex = 0;
      // A match that starts before the cut is complete: a longer value starting there would reach the
      // end of buf, and then its start would be held.
      for (let m = re.exec(buf); m !== null && m.index < cut; m = re.exec(buf)) {
        out += buf.slice(pos, m.index) + replacement(m[0]);
        pos = m.index + m[0].length;
      }
      const upTo = Math.max(pos, cut);
      out += buf.slice(pos, upTo);
      carry = buf.slice(upTo);
      return out;
    };
    return { push: (chunk) => step(chunk, false), end: () => step("", true) };
  };
}

/** Where an `api_key` field that has not closed yet starts, if one does near the end. */
function openFieldStart(buf: string): number | undefined {
  const from = Math.max(0, buf.length - OPEN_FIELD_WINDOW);
  const tail = buf.slice(from);
  let start: number | undefined;
  for (const re of OPEN_FIELD) {
    const i = tail.search(re);
    if (i >= 0 && (start === undefined || i < start)) start = i;
  }
  return start === undefined ? undefined : from + start;
}

function replacement(match: string): string {
  if (!match.startsWith("api_key") && !match.startsWith('"api_key"')) return REDACTED;
  // Keep the field and its quotes, so the text stays valid JSON (or Python repr).
  const quote = match.slice(-1);
  const open = match.indexOf(quote, match.search(/[=:]/));
  return `${match.slice(0, open + 1)}${REDACTED}${quote}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
