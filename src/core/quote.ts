// The one function that makes a string safe for a POSIX shell (bash, sh, dash).
// Anything outside a conservative set of characters is wrapped in single quotes; a single quote
// inside becomes '\'' (close, escaped quote, reopen). Newlines, $(), ; and * are inert inside '...'.

const SAFE = /^[A-Za-z0-9_\-+=.,:/@%]+$/;

export function shellQuote(value: string): string {
  if (value.includes("\0")) throw new Error("a NUL byte cannot be passed through a shell");
  if (SAFE.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}
