import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { shellJoin, shellQuote } from "../../src/core/quote.js";

/** What a real POSIX shell makes of a quoted command line: the words it passes to printf. */
function wordsAfterShell(shell: "bash" | "sh", commandLine: string): string[] {
  const out = execFileSync(shell, ["-c", `printf '%s\\0' ${commandLine}`], { encoding: "utf8" });
  expect(out.endsWith("\0")).toBe(true);
  return out.slice(0, -1).split("\0");
}

const NASTY_WORDS = [
  "plain",
  "",
  " ",
  "two words",
  "it's",
  "'",
  "''",
  `"double"`,
  `mixed 'single' and "double"`,
  "$(id)",
  "${HOME}",
  "$HOME",
  "`id`",
  "a; rm -rf /",
  "a && b || c",
  "a | b > /tmp/x < /etc/passwd",
  "line1\nline2",
  "\n",
  "trailing newline\n",
  "back\\slash",
  "\\'",
  "'\\''",
  "tab\tsep",
  "*",
  "?.txt",
  "[abc]",
  "{a,b}",
  "~",
  "~root",
  "#comment",
  "!history",
  "-n",
  "--flag=value",
  "-e",
  "ünïcödé ✓ 模型 🙂",
  "=",
  "a=b c",
  "%s%n",
  "\u00a0nbsp",
  "\r\n",
  "\x1b[31mred",
];

describe("shellQuote", () => {
  it.each([
    ["plain", "plain"],
    ["meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"],
    ["--page-size=64", "--page-size=64"],
    ["10.0.0.1:10011", "10.0.0.1:10011"],
    ["", "''"],
    ["two words", "'two words'"],
    ["it's", "'it'\\''s'"],
    ["$(id)", "'$(id)'"],
    ["a\nb", "'a\nb'"],
    ["~", "'~'"],
    ["*", "'*'"],
  ])("%j → %j", (value, quoted) => {
    expect(shellQuote(value)).toBe(quoted);
  });

  it.each(["bash", "sh"] as const)("every nasty word survives a real %s unchanged, one word each", (shell) => {
    expect(wordsAfterShell(shell, shellJoin(NASTY_WORDS))).toEqual(NASTY_WORDS);
    for (const word of NASTY_WORDS) expect(wordsAfterShell(shell, shellQuote(word))).toEqual([word]);
  });

  it("random strings over the shell's special characters round-trip through bash", () => {
    // Deterministic: a failure reproduces.
    let seed = 42;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    const alphabet = [..."ab '\"\\$`(){};|&<>*?[]~#!\n\t=-%", "é", "模", "🙂"];
    const words = Array.from({ length: 300 }, () => Array.from({ length: next() % 12 }, () => alphabet[next() % alphabet.length]).join(""));
    expect(wordsAfterShell("bash", shellJoin(words))).toEqual(words);
  });

  it("runs nothing: a quoted command substitution does not execute", () => {
    const out = execFileSync("bash", ["-c", `echo ${shellQuote("$(echo EXECUTED)")} ${shellQuote("`echo EXECUTED`")}`], {
      encoding: "utf8",
    });
    expect(out).toBe("$(echo EXECUTED) `echo EXECUTED`\n");
  });

  it("refuses a NUL byte, which no shell word can hold", () => {
    expect(() => shellQuote("a\0b")).toThrow(/NUL/);
    expect(() => shellJoin(["ok", "a\0b"])).toThrow(/NUL/);
  });

  it("shellJoin of nothing is empty", () => {
    expect(shellJoin([])).toBe("");
  });
});
