// The ssh2 connection behind a HostSession: commands (killed on the host when their step is cut short)
// and direct-tcpip channels, with ssh2's channel errors translated into SshError.
import { randomBytes } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import { type Duplex, Readable } from "node:stream";
import type { Client } from "ssh2";
import type { HostKey } from "../../core/host-keys.js";
import type { SshTarget } from "../../core/ssh-target.js";
import { SshError, type SshFailure, type SshStage } from "../../errors.js";
import { runStep, type StepLimits } from "./step.js";

export interface ExecOptions extends StepLimits {
  /** All of stdin at once, or a stream written to the command as it comes (ended when the stream ends). */
  stdin?: string | Buffer | Readable;
  /** Streams stdout as it arrives (decoded as UTF-8 across chunk boundaries), e.g. for `logs -f`. */
  onStdout?: (text: string) => void;
}

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

export interface HostSession {
  readonly host: string;
  readonly target: SshTarget;
  /** The host key the host proved it holds in the handshake (the pinned one, or the one trusted on first use). */
  readonly hostKey: HostKey | undefined;
  readonly closed: boolean;
  exec(cmd: string, opts?: ExecOptions): Promise<ExecResult>;
  forwardOut(destHost: string, destPort: number, opts?: StepLimits): Promise<Duplex>;
  close(): Promise<void>;
}

const DEFAULT_EXEC_TIMEOUT_MS = 600_000;
export const DEFAULT_FORWARD_TIMEOUT_MS = 30_000;
const CLOSE_GRACE_MS = 2_000;
const KILL_TIMEOUT_MS = 5_000;

export class Ssh2HostSession implements HostSession {
  readonly host: string;
  hostKey: HostKey | undefined; // set by connectHost once the handshake accepted it
  // Set by connectHost during the handshake only; later errors just explain a "lost" connection (lastError).
  onConnectError: ((err: Error) => void) | undefined;
  onConnectClose: (() => void) | undefined;
  private socketClosed = false;
  private lastError: Error | undefined;

  constructor(
    readonly target: SshTarget,
    private readonly client: Client,
  ) {
    this.host = target.alias;
    // Without a listener, an 'error' (keepalive timeout, reset) would crash the process.
    client.on("error", (err: Error) => {
      this.lastError = err;
      this.onConnectError?.(err);
    });
    client.on("close", () => {
      this.socketClosed = true;
      this.onConnectClose?.();
    });
  }

  get closed(): boolean {
    return this.socketClosed;
  }

  async exec(cmd: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    // sshd starts every command in a new session (setsid), so the shell's $$ is the process group of
    // everything the command starts. It is reported on stderr (a per-call marker, stripped again) so a
    // timeout or cancel can kill the whole group. ssh2 cannot send the SSH "signal" request after stdin
    // has ended, and sshd ignores that request for root logins anyway.
    const marker = `tpd-pgid-${randomBytes(6).toString("hex")}:`;
    const run: { pgid?: number; exited: boolean } = { exited: false };
    try {
      return await runStep<ExecResult>(this.host, "exec", "command", { timeoutMs, signal: opts.signal }, (step) => {
        this.assertOpen("exec", "run a command");
        this.client.exec(`printf '${marker}%s\\n' "$$" >&2\n${cmd}`, (err, channel) => {
          if (err !== undefined && err !== null) {
            step.reject(this.channelError("exec", "could not start a command", err));
            return;
          }
          step.onStop(() => channel.close());
          const stdout: Buffer[] = [];
          const stderr: Buffer[] = [];
          let head = "";
          let exit: { code: number | null; signal?: string } = { code: null };
          const decoder = opts.onStdout ? new StringDecoder("utf8") : undefined;
          channel.on("data", (b: Buffer) => {
            stdout.push(b);
            if (decoder) opts.onStdout?.(decoder.write(b));
          });
          channel.stderr.on("data", (b: Buffer) => {
            stderr.push(b);
            if (run.pgid === undefined && head.length < 65_536) {
              head += b.toString("latin1");
              const m = new RegExp(`${marker}(\\d+)\n`).exec(head);
              if (m?.[1] !== undefined) run.pgid = Number(m[1]);
            }
          });
          channel.on("exit", (code: number | null, signal?: string) => {
            run.exited = true;
            exit = signal === undefined || signal === null ? { code } : { code, signal };
          });
          channel.on("error", (e: Error) => step.reject(this.channelError("exec", "command channel failed", e)));
          channel.on("close", () => {
            if (!run.exited && this.socketClosed) {
              step.reject(this.lost("while a command was running"));
              return;
            }
            const errText = Buffer.concat(stderr)
              .toString("utf8")
              .replace(new RegExp(`${marker}\\d+\n`), "");
            step.resolve({ ...exit, stdout: Buffer.concat(stdout).toString("utf8"), stderr: errText });
          });
          // stdin may carry secrets: it is written to the channel and nowhere else.
          if (opts.stdin === undefined) channel.end();
          else if (opts.stdin instanceof Readable) opts.stdin.pipe(channel);
          else channel.end(opts.stdin);
        });
      });
    } catch (err) {
      const stopped = err instanceof SshError && (err.stage === "timeout" || err.reason === "cancelled");
      if (stopped && !run.exited && run.pgid !== undefined) await this.killGroup(run.pgid);
      throw err;
    }
  }

  private async killGroup(pgid: number): Promise<void> {
    try {
      await this.exec(`kill -KILL -- -${pgid} 2>/dev/null`, { timeoutMs: KILL_TIMEOUT_MS });
    } catch {
      // best effort: the connection may be the thing that failed; the caller still gets the original error
    }
  }

  forwardOut(destHost: string, destPort: number, opts: StepLimits = {}): Promise<Duplex> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
    const what = `forward to ${destHost}:${destPort}`;
    return runStep<Duplex>(this.host, "forward", what, { timeoutMs, signal: opts.signal }, (step) => {
      this.assertOpen("forward", `open a ${what}`);
      this.client.forwardOut("127.0.0.1", 0, destHost, destPort, (err, channel) => {
        if (err !== undefined && err !== null) {
          step.reject(this.forwardError(destHost, destPort, err));
        } else if (step.settled) {
          channel.destroy(); // opened after the deadline or the cancel: nobody will read it
        } else {
          step.resolve(channel);
        }
      });
    });
  }

  async close(): Promise<void> {
    if (this.socketClosed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.client.destroy();
        resolve();
      }, CLOSE_GRACE_MS);
      this.client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
  }

  private assertOpen(stage: SshStage, doing: string): void {
    if (this.socketClosed) throw this.lost(`before it could ${doing}`, stage);
  }

  private lost(when: string, stage: SshStage = "exec"): SshError {
    return new SshError({
      host: this.host,
      stage,
      reason: "lost",
      cause: this.lastError,
      message: `the SSH connection to ${this.target.hostName} is gone (${when})${this.lastError ? `: ${this.lastError.message}` : ""}`,
      hint: "The host may have been preempted or rebooted; run `sky status --refresh` and retry.",
    });
  }

  private channelError(stage: SshStage, what: string, err: Error): SshError {
    if (this.socketClosed) return this.lost(`${what}`, stage);
    return new SshError({
      host: this.host,
      stage,
      cause: err,
      reason: openFailureReason(err),
      message: `${what}: ${err.message}`,
      hint: "sshd may have hit its MaxSessions limit or be shutting down; retry with fewer parallel commands.",
    });
  }

  private forwardError(destHost: string, destPort: number, err: Error): SshError {
    if (this.socketClosed) return this.lost(`while opening a forward to ${destHost}:${destPort}`, "forward");
    const reason = openFailureReason(err);
    const hint =
      reason === "refused"
        ? `Nothing listens on ${destHost}:${destPort} as seen from ${this.host}; the server may still be starting, or it died (check its log).`
        : reason === "prohibited"
          ? `sshd on ${this.host} does not allow TCP forwarding (AllowTcpForwarding).`
          : reason === "unreachable"
            ? `${this.host} cannot reach ${destHost}; check the address (it must be one the host itself can reach, e.g. its internal IP).`
            : `Check that ${destHost}:${destPort} is reachable from ${this.host}.`;
    return new SshError({
      host: this.host,
      stage: "forward",
      cause: err,
      ...(reason === undefined ? {} : { reason }),
      message: `cannot open a connection to ${destHost}:${destPort} through SSH: ${err.message}`,
      hint,
    });
  }
}

// SSH_MSG_CHANNEL_OPEN_FAILURE: reason 1 is "administratively prohibited"; for 2 (connect failed)
// OpenSSH puts strerror() of its connect() into the description.
function openFailureReason(err: Error): SshFailure | undefined {
  const code = (err as Error & { reason?: unknown }).reason;
  if (code === 1) return "prohibited";
  if (/connection refused/i.test(err.message)) return "refused";
  if (/no route to host|network is unreachable/i.test(err.message)) return "unreachable";
  return undefined;
}
