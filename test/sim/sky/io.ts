// Output and prompts of the client. Writes are synchronous (fd 1/2) so that an exit right after a
// print never loses it, even when stdout is a pipe that the caller reads slowly.
import { closeSync, existsSync, openSync, readSync, writeSync } from "node:fs";
import { Abort } from "./errors.js";

export function out(text: string): void {
  writeAll(1, text);
}

export function outln(text = ""): void {
  writeAll(1, text + "\n");
}

export function errln(text = ""): void {
  writeAll(2, text + "\n");
}

function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text, "utf8");
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      if ((e as NodeJS.ErrnoException).code === "EPIPE") return;
      throw e;
    }
  }
}

let stdinLines: string[] = [];
let stdinEnded = false;
let stdinBuf = "";
let waiter: (() => void) | null = null;
let stdinStarted = false;

function startStdin(): void {
  if (stdinStarted) return;
  stdinStarted = true;
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    stdinBuf += d;
    let i: number;
    while ((i = stdinBuf.indexOf("\n")) >= 0) {
      stdinLines.push(stdinBuf.slice(0, i).replace(/\r$/, ""));
      stdinBuf = stdinBuf.slice(i + 1);
    }
    waiter?.();
  });
  process.stdin.on("end", () => {
    stdinEnded = true;
    waiter?.();
  });
  process.stdin.on("error", () => {
    stdinEnded = true;
    waiter?.();
  });
}

async function readLine(): Promise<string | null> {
  startStdin();
  for (;;) {
    const line = stdinLines.shift();
    if (line !== undefined) return line;
    if (stdinEnded) {
      // click's input() returns a last line without newline, then EOF.
      if (stdinBuf !== "") {
        const rest = stdinBuf;
        stdinBuf = "";
        return rest;
      }
      return null;
    }
    await new Promise<void>((r) => (waiter = r));
    waiter = null;
  }
}

export function stopStdin(): void {
  if (stdinStarted) process.stdin.pause();
  stdinLines = [];
}

// click.confirm(text, default, abort=True): EOF or "n" abort; bad input asks again.
export async function confirm(text: string, defaultYes: boolean): Promise<void> {
  const suffix = defaultYes ? " [Y/n]: " : " [y/N]: ";
  for (;;) {
    out(text + suffix);
    const line = await readLine();
    if (line === null) {
      // input() hits EOF without echoing a newline; click's main then prints "Aborted!".
      throw new Abort();
    }
    const v = line.trim().toLowerCase();
    let yes: boolean;
    if (v === "y" || v === "yes") yes = true;
    else if (v === "n" || v === "no") yes = false;
    else if (v === "") yes = defaultYes;
    else {
      outln("Error: invalid input");
      continue;
    }
    stopStdin();
    if (!yes) throw new Abort();
    return;
  }
}

/** A reader of what has been appended to a file since the last call (a log another process writes). */
export function fileTailer(path: string): () => string {
  let offset = 0;
  return () => {
    if (!existsSync(path)) return "";
    const fd = openSync(path, "r");
    try {
      const chunks: Buffer[] = [];
      const buf = Buffer.alloc(65536);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        chunks.push(Buffer.from(buf.subarray(0, n)));
        offset += n;
      }
      return Buffer.concat(chunks).toString("utf8");
    } finally {
      closeSync(fd);
    }
  };
}

/** All of stdin (how a detached worker receives its secrets). */
export function readStdin(): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (d: string) => (data += d));
    process.stdin.on("end", () => resolve(data));
  });
}
