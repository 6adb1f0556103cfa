import { describe, expect, it } from "vitest";
import { byteStreamRedactor, MIN_SECRET_LENGTH, REDACTED, redactor, streamRedactor } from "../../src/core/redact.js";

const KEY = "sk-live-0123456789abcdef";
const HF = "hf_AbCdEfGhIjKlMnOp";

/** Feeds text in the given pieces and returns what came out. */
function streamed(values: string[], pieces: string[]): string {
  const s = streamRedactor(values);
  return pieces.map((p) => s.push(p)).join("") + s.end();
}

/** Every way of cutting text into two chunks. */
function twoWaySplits(text: string): [string, string][] {
  return Array.from({ length: text.length + 1 }, (_, i) => [text.slice(0, i), text.slice(i)]);
}

describe("redactor", () => {
  it("replaces every configured value, wherever it appears", () => {
    const r = redactor([KEY, HF]);
    expect(r(`Bearer ${KEY} and ${HF}; again ${KEY}`)).toBe(`Bearer ${REDACTED} and ${REDACTED}; again ${REDACTED}`);
    expect(r("nothing secret here")).toBe("nothing secret here");
  });

  it("redacts api_key fields whose value it was not given, keeping JSON valid", () => {
    const r = redactor([]);
    const body = JSON.stringify({ model_path: "Qwen/Qwen3-8B", api_key: 'unknown-"key"-value', port: 30000 });
    const out = JSON.parse(r(body)) as Record<string, unknown>;
    expect(out).toEqual({ model_path: "Qwen/Qwen3-8B", api_key: REDACTED, port: 30000 });
    expect(r('{"api_key" :\n "abcdefgh12"}')).toBe(`{"api_key" :\n "${REDACTED}"}`);
  });

  it("redacts the Python repr sglang-jax logs (server_args=ServerArgs(…)), in either quote", () => {
    const r = redactor([]);
    expect(r("ServerArgs(model_path='m', api_key='s3cr3t-value', port=30000)")).toBe(
      `ServerArgs(model_path='m', api_key='${REDACTED}', port=30000)`,
    );
    expect(r(`ServerArgs(api_key="it's-a-key", x=1)`)).toBe(`ServerArgs(api_key="${REDACTED}", x=1)`);
    expect(r(String.raw`api_key='a\'b-c-d-e-f'`)).toBe(`api_key='${REDACTED}'`);
  });

  it("leaves api_key without a value, and other fields that only start like it, alone", () => {
    const r = redactor([]);
    for (const text of [
      "ServerArgs(api_key=None)",
      '{"api_key": null}',
      '{"api_key_secret": "x"}',
      "api_key_secret='SGLANG_API_KEY'",
      "api_key=''",
    ]) {
      expect(r(text)).toBe(text);
    }
  });

  it("catches a value in its JSON-escaped form", () => {
    const odd = 'quote"back\\slash-1';
    const r = redactor([odd]);
    expect(r(JSON.stringify({ token: odd }))).toBe(JSON.stringify({ token: REDACTED }));
  });

  it("prefers the longer of two values that start alike", () => {
    const r = redactor(["abcdefgh", "abcdefghijkl"]);
    expect(r("xxabcdefghijklyy abcdefgh!")).toBe(`xx${REDACTED}yy ${REDACTED}!`);
  });

  it(`refuses values shorter than ${MIN_SECRET_LENGTH} characters, without naming them`, () => {
    expect(MIN_SECRET_LENGTH).toBe(8);
    expect(() => redactor(["1234567"])).toThrow(/7 characters cannot be redacted safely \(at least 8\)/);
    expect(() => redactor(["1234567"])).not.toThrow(/1234567/);
    expect(() => streamRedactor(["", KEY])).toThrow(/cannot be redacted/);
    expect(() => byteStreamRedactor(["ключ123"])).toThrow(/cannot be redacted/);
    expect(redactor(["12345678"])("a12345678b")).toBe(`a${REDACTED}b`);
  });
});

describe("streamRedactor", () => {
  const text = `data: {"choices":[{"text":"token ${KEY} and ${HF}"}],"api_key":"never-seen-key"}\n\n`;
  const whole = redactor([KEY, HF])(text);

  it("catches a value or an api_key field split across two chunks, at every split point", () => {
    expect(whole).not.toContain(KEY);
    expect(whole).not.toContain("never-seen-key");
    for (const [a, b] of twoWaySplits(text)) expect(streamed([KEY, HF], [a, b]), `split at ${a.length}`).toBe(whole);
  });

  it("catches a value that overlaps itself, however the text is cut", () => {
    const self = "aaaaaaab";
    const t = "aaaaaaaaab aaaaaaab aaaaaaa";
    const want = redactor([self])(t);
    expect(want).toBe(`aa${REDACTED} ${REDACTED} aaaaaaa`);
    for (let i = 0; i <= t.length; i++)
      for (let j = i; j <= t.length; j++) expect(streamed([self], [t.slice(0, i), t.slice(i, j), t.slice(j)])).toBe(want);
  });

  it("catches them fed one character at a time", () => {
    expect(streamed([KEY, HF], [...text])).toBe(whole);
  });

  it("holds back only a tail that could start a secret, so an SSE event goes out whole", () => {
    const s = streamRedactor([KEY]);
    const event = "data: a token that is not secret at all\n\n";
    expect(s.push(event)).toBe(event);
    expect(s.push("data: sk-li")).toBe("data: ");
    expect(s.push("ve is not the key\n\n")).toBe("sk-live is not the key\n\n");
    expect(s.push(`data: x${KEY.slice(0, -1)}`)).toBe("data: x");
    expect(s.end()).toBe(KEY.slice(0, -1));
  });

  it("holds an open api_key field until it closes, and nothing more after it", () => {
    const s = streamRedactor([KEY]);
    const head = `${"x".repeat(100)}"api_key": "a-long-partial-value-still-open`;
    expect(s.push(head)).toBe("x".repeat(100));
    expect(s.push(`-rest"}${"y".repeat(100)}`)).toBe(`"api_key": "${REDACTED}"}${"y".repeat(100)}`);
    // Text that merely mentions api_key_secret is not held, nor a field that ended without a value.
    const t = streamRedactor([]);
    expect(t.push("the flag is api_key_secret, see docs")).toBe("the flag is api_key_secret, see docs");
    expect(t.push('{"api_key": null}\n')).toBe('{"api_key": null}\n');
    expect(t.push('{"x": 1, "api_')).toBe('{"x": 1, ');
  });
});

describe("byteStreamRedactor", () => {
  const utf8 = (s: string) => Buffer.from(s, "utf8");

  it("matches values by their UTF-8 bytes, split anywhere, even inside a character", () => {
    const secret = "clé-secrète-ü-42";
    const bytes = utf8(`{"t":"Grüße ${secret} 🚀"}`);
    const want = utf8(`{"t":"Grüße ${REDACTED} 🚀"}`);
    for (let i = 0; i <= bytes.length; i++) {
      const s = byteStreamRedactor([secret]);
      const out = Buffer.concat([s.push(bytes.subarray(0, i)), s.push(bytes.subarray(i)), s.end()]);
      expect(out.equals(want), `split at byte ${i}`).toBe(true);
    }
  });

  it("passes bytes that are not UTF-8 through unchanged", () => {
    const bin = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28, 0x61, 0x70, 0x69]);
    const s = byteStreamRedactor([KEY]);
    expect(Buffer.concat([s.push(bin), s.end()]).equals(bin)).toBe(true);
  });
});
