// Where the local proxy listens: a loopback port (any local user can connect), or a unix socket that only
// its owner can use (0600), for shared machines.
import { chmod, link, lstat, mkdtemp, rm, unlink } from "node:fs/promises";
import type { Server } from "node:http";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { UsageError } from "../../errors.js";

export type ListenOn = { port: number; host?: string } | { socketPath: string };

export interface Listening {
  /** What a client puts in its URL (with a unix socket: `http://localhost`, plus the path). */
  url: string;
  port?: number;
  socketPath?: string;
  /** After the server closed: removes the socket file, if it is still ours. */
  cleanup(): Promise<void>;
}

export async function listenOn(server: Server, on: ListenOn): Promise<Listening> {
  if ("socketPath" in on) return await listenUnix(server, on.socketPath);
  const host = on.host ?? "127.0.0.1";
  await listen(server, { port: on.port, host }, (err) =>
    err.code === "EADDRINUSE"
      ? new UsageError(`cannot listen on ${host}:${on.port}: the port is in use`, {
          hint: "pick another --local-port (0 picks a free one)",
        })
      : new UsageError(`cannot listen on ${host}:${on.port}: ${err.message}`),
  );
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : on.port;
  return { url: `http://${host}:${port}`, port, cleanup: async () => undefined };
}

/**
 * The socket is bound inside a fresh 0700 directory, made 0600 there and only then linked to `path`, so
 * no other user can connect in between; link() never replaces a file that appeared meanwhile.
 */
async function listenUnix(server: Server, path: string): Promise<Listening> {
  const existing = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new UsageError(`cannot use ${path} for the proxy's socket: ${err.message}`);
  });
  if (existing && !existing.isSocket()) {
    throw new UsageError(`${path} exists and is not a socket; refusing to replace it`, { hint: "choose another --unix-socket path" });
  }
  if (existing) {
    if (await answers(path))
      throw new UsageError(`${path} is in use by another process`, { hint: "stop that proxy, or choose another path" });
    await unlink(path); // a socket left behind by a proxy that was killed
  }
  const dir = await mkdtemp(join(dirname(path), ".tpd-")).catch((err: Error) => {
    throw new UsageError(`cannot create the proxy's socket next to ${path}: ${err.message}`);
  });
  try {
    const bound = join(dir, "s");
    await listen(
      server,
      { path: bound, readableAll: false, writableAll: false },
      (err) => new UsageError(`cannot listen on ${path}: ${err.message}`),
    );
    await chmod(bound, 0o600);
    await link(bound, path).catch((err: NodeJS.ErrnoException) => {
      server.close();
      throw new UsageError(`cannot create ${path}: ${err.code === "EEXIST" ? "something else created it meanwhile" : err.message}`);
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const mine = await lstat(path);
  return {
    url: "http://localhost",
    socketPath: path,
    cleanup: async () => {
      const now = await lstat(path).catch(() => undefined);
      if (now && now.ino === mine.ino && now.dev === mine.dev) await unlink(path).catch(() => undefined);
    },
  };
}

function listen(
  server: Server,
  options: { port: number; host: string } | { path: string; readableAll: boolean; writableAll: boolean },
  translate: (err: NodeJS.ErrnoException) => Error,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(translate(err));
    server.once("error", onError);
    server.listen(options, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/** Whether a live server accepts connections on an existing socket (a stale one refuses). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ path });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => resolve(err.code !== "ECONNREFUSED" && err.code !== "ENOENT"));
  });
}
