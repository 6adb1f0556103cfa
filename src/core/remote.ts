// The shell commands tpu-deploy runs on TPU hosts. Pure: builds strings; every user-supplied value goes
// through shellQuote. Secrets never appear here: they reach the host on the SSH channel's stdin.
// Long because it is every command sent to a host in one place, so quoting is reviewed in one file.
import { shellJoin, shellQuote } from "./quote.js";
import { REDACTED } from "./redact.js";

/**
 * A process's start time (field 22 of /proc/PID/stat), read after the `(comm)` field, which may itself
 * contain spaces or parentheses: everything up to the last ") " is dropped, leaving fields 3.. .
 */
function startTimeInto(pid: string, variable: string): string {
  // Shell builtins only (no sed, cut or subshell to start): the 22nd field of /proc/PID/stat, the fields counted
  // after the command name, which may itself hold ") ". Sets the positional parameters.
  return `read -r ${variable} < /proc/${pid}/stat; ${variable}=\${${variable}##*) }; set -- $${variable}; ${variable}=\${20}`;
}

function startTimeOf(pid: string): string {
  return `${startTimeInto(pid, "_st")}; echo "$_st"`;
}

/**
 * A path on the host as one shell word: `~/x` becomes `"$HOME"/'x'` (a quoted ~ is not expanded), anything
 * else is quoted as it is.
 */
export function hostPathWord(path: string): string {
  return path.startsWith("~/") ? `"$HOME"/${shellQuote(path.slice(2))}` : shellQuote(path);
}

/** Per-deployment directory on each host, relative to the login user's home. */
export function remoteDir(name: string): string {
  return `.tpu-deploy/${name}`;
}

export interface RemoteFiles {
  dir: string;
  secrets: string;
  run: string;
  log: string;
  pid: string;
}

export function remoteFiles(name: string): RemoteFiles {
  const dir = remoteDir(name);
  return { dir, secrets: `${dir}/secrets.env`, run: `${dir}/run.sh`, log: `${dir}/server.log`, pid: `${dir}/server.pid` };
}

/** Writes stdin to a file readable only by the login user. */
export function writeFromStdin(path: string): string {
  const dir = path.slice(0, path.lastIndexOf("/"));
  return `cd && umask 077 && mkdir -p ${shellQuote(dir)} && chmod 700 ${shellQuote(dir)} && cat > ${shellQuote(path)}.tmp && mv -f ${shellQuote(path)}.tmp ${shellQuote(path)}`;
}

/**
 * The secrets file run.sh sources: `export NAME='value'` for the server's environment, except the API key,
 * which is a plain (unexported) shell variable: it reaches the server on a file descriptor, never through its
 * environment or argv (/proc/PID/environ and /proc/PID/cmdline are readable by every process of the user).
 */
export function secretsEnvFile(values: Map<string, string>, apiKeySecret?: string): string {
  return [...values].map(([k, v]) => `${k === apiKeySecret ? "" : "export "}${k}=${shellQuote(v)}\n`).join("");
}

// The server's first Python code, before sglang-jax's own (python -u -c BOOT KEY_FD NAMES <server flags>):
// - the API key, read from KEY_FD ("-": none), goes into sys.argv in-process as --api-key=KEY (one word, so a
//   key starting with "-" is not taken for an option by argparse): sglang-jax takes it only there, and it is
//   then in no argv and no environment;
// - a forked filter owns the log: every byte the server and its children write to stdout/stderr passes through
//   it, each secret value (the key, and the variables NAMES lists) replaced by [REDACTED], because sglang-jax logs its
//   whole ServerArgs, key included (docs/upstream/hostkeys-sglang-facts.md §B1). The filter ignores TERM and
//   INT and ends when the last writer is gone, so it drains what a dying server wrote; it holds back only a
//   tail that could be the start of a secret.
const BOOT = [
  "import os,runpy,signal,sys",
  "fd=sys.argv.pop(1); names=[n for n in sys.argv.pop(1).split(',') if n]; key=None",
  "if fd!='-':",
  "  chunks=[]",
  "  while True:",
  "    c=os.read(int(fd),65536)",
  "    if not c: break",
  "    chunks.append(c)",
  "  os.close(int(fd)); key=b''.join(chunks).decode()",
  "bs=sorted({v.encode() for v in [key]+[os.environ.get(n) for n in names] if v}, key=len, reverse=True)",
  "if bs:",
  "  r,w=os.pipe()",
  "  if os.fork()==0:",
  "    os.close(w); signal.signal(signal.SIGTERM,signal.SIG_IGN); signal.signal(signal.SIGINT,signal.SIG_IGN)",
  "    def out(b):",
  "      while b: b=b[os.write(1,b):]",
  "    buf=b''",
  "    while True:",
  "      c=os.read(r,65536)",
  "      if not c: break",
  "      buf+=c",
  `      for b in bs: buf=buf.replace(b,${JSON.stringify(REDACTED)}.encode())`,
  "      cut=len(buf)",
  "      for b in bs:",
  "        for k in range(min(len(b)-1,len(buf)),0,-1):",
  "          if b.startswith(buf[-k:]): cut=min(cut,len(buf)-k); break",
  "      out(buf[:cut]); buf=buf[cut:]",
  "    out(buf); os._exit(0)",
  "  os.close(r); os.dup2(w,1); os.dup2(w,2); os.close(w)",
  "if key is not None: sys.argv[1:1]=['--api-key='+key]",
  "runpy.run_module('sgl_jax.launch_server', run_name='__main__', alter_sys=True)",
].join("\n");

/**
 * run.sh: the start wrapper. Runs as its own session (setsid; startCommand records its "pid starttime"), loads
 * the secrets and server.env, and execs the server so that pid = process group id of every rank process.
 */
export function runScript(opts: {
  files: RemoteFiles;
  argv: string[];
  env: Record<string, string>;
  apiKeySecret?: string | undefined;
  /** Names of the secrets the server gets: their values are kept out of its log. */
  secretNames?: readonly string[];
}): string {
  const { files, argv, env, apiKeySecret } = opts;
  const lines = [
    "#!/bin/bash",
    "# Written by tpu-deploy. Started with setsid: this shell's pid is the process group of the server.",
    'cd "$HOME" || exit 1',
    `if [ -f ${shellQuote(files.secrets)} ]; then . ${shellQuote(files.secrets)}; fi`,
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`),
  ];
  const [python = "", ...rest] = argv;
  if (rest[0] === "-u" && rest[1] === "-m" && rest[2] === "sgl_jax.launch_server") {
    const names = (opts.secretNames ?? []).filter((n) => n !== apiKeySecret).join(",");
    const boot = [hostPathWord(python), shellJoin(["-u", "-c", BOOT, apiKeySecret ? "3" : "-", names, ...rest.slice(3)])];
    // printf is a bash builtin: the key is in no process's argv on its way to fd 3.
    if (apiKeySecret) boot.push(`3< <(printf '%s' "$${apiKeySecret}")`);
    lines.push(`exec ${boot.join(" ")}`);
  } else {
    lines.push(`exec ${[hostPathWord(python), ...rest.map(shellQuote)].join(" ")}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Starts run.sh in a new session, detached from the SSH channel; prints "pid starttime" at once. */
export function startCommand(files: RemoteFiles): string {
  const q = shellQuote;
  return [
    "cd",
    // The log (and what the server makes) is the login user's alone; an older log keeps its mode through `>`.
    "umask 077",
    `: > ${q(files.pid)}`,
    `if [ -e ${q(files.log)} ]; then chmod 600 ${q(files.log)}; fi`,
    // setsid forks only when its caller leads a process group; a background job of a shell without job control
    // does not, so $! is the process that becomes run.sh, its session and process group. Its start time is set
    // at the fork: known at once, without waiting for run.sh to start.
    `setsid bash ${q(files.run)} > ${q(files.log)} 2>&1 < /dev/null &`,
    // Until its session (and process group) exists, so a stop right after this finds it: a few builtin tries,
    // then 10 ms apart, 5 s at most. Then server.pid, for a stop that has only the host's word for it.
    "pid=$!; i=0",
    "until kill -0 -- -$pid 2>/dev/null || [ $i -ge 1500 ]; do i=$((i + 1)); [ $i -le 1000 ] || sleep 0.01; done",
    `${startTimeInto("$pid", "st")}; echo "$pid $st" > ${q(files.pid)}; echo "$pid $st"`,
  ].join("\n"); // not "; ": `cmd &;` is a syntax error in bash and sh
}

/** What must exist on a host before its server starts: setup's interpreter and its finish marker. */
export interface StartPrerequisites {
  python: string;
  marker: string;
}

/** Printed (and exit 3) by the start when a prerequisite is missing: `tpd-missing python|marker <path>`. */
export const MISSING_MARK = "tpd-missing";

/**
 * One round trip per host: the prerequisites checked, the secrets file from stdin (0600), run.sh from the
 * (secret-free) command itself, then the start. The script holds secret names only, so it may appear in a
 * command line.
 */
export function installAndStartCommand(files: RemoteFiles, script: string, pre: StartPrerequisites): string {
  const q = shellQuote;
  const check = (kind: string, test: string, path: string) =>
    `p=${hostPathWord(path)}; if ! [ ${test} "$p" ]; then cat > /dev/null; echo "${MISSING_MARK} ${kind} $p"; exit 3; fi`;
  return [
    "cd",
    check("python", "-x", pre.python),
    check("marker", "-f", pre.marker),
    `{ ${writeFromStdin(files.secrets)}; } || exit 1`,
    `printf '%s' ${q(script)} > ${q(files.run)}.tmp && mv -f ${q(files.run)}.tmp ${q(files.run)} || exit 1`,
    startCommand(files),
  ].join("\n");
}

/**
 * Stops a process group this tool started, verified by the leader's start time so a reused pid is never
 * hit: TERM, a grace period, then KILL. Never matches processes by name.
 */
export function stopCommand(pgid: number, startTime: string | undefined, graceSeconds = 10): string {
  return `pg=${pgid}; st=${startTime === undefined ? "" : shellQuote(startTime)}; ${stopGroup(graceSeconds)}`;
}

/** Stops whatever server.pid on the host names (for servers whose pid the local state lost). */
export function stopFromPidFileCommand(files: RemoteFiles, graceSeconds = 10): string {
  const pid = shellQuote(files.pid);
  return `cd; if [ ! -s ${pid} ]; then echo none; exit 0; fi; read pg st < ${pid}; ${stopGroup(graceSeconds)}`;
}

/** The stop itself, on shell variables $pg (process group) and $st (leader start time, may be empty). */
function stopGroup(graceSeconds: number): string {
  return (
    `if [ -n "$st" ] && [ -e /proc/$pg ] && [ "$(${startTimeOf("$pg")})" != "$st" ]; then echo reused; exit 0; fi; ` +
    `if ! kill -0 -- -$pg 2>/dev/null; then echo gone; exit 0; fi; ` +
    `kill -TERM -- -$pg 2>/dev/null; ` +
    `for i in $(seq 1 ${graceSeconds * 10}); do kill -0 -- -$pg 2>/dev/null || { echo stopped; exit 0; }; sleep 0.1; done; ` +
    `kill -KILL -- -$pg 2>/dev/null; sleep 0.2; echo killed`
  );
}

/**
 * The process runs: it exists and is not a zombie. The server is orphaned once its SSH channel closes, and
 * an init that reaps late (containers; ~2 s seen) leaves an exited server answering `kill -0` meanwhile.
 */
function runningTest(pid: number): string {
  // Builtins only: a watch tests this 4 times a second on every host (the simulated cloud runs them all on one
  // machine, where a sed and a cut per test were most of its forks).
  return `kill -0 ${pid} 2>/dev/null && { read -r _s < /proc/${pid}/stat && _s=\${_s##*) } && [ "\${_s%% *}" != Z ]; } 2>/dev/null`;
}

/**
 * Exits when the process dies ("exited"), or when the scheduler child of its group, once seen, is gone while
 * the main process lives on ("scheduler-exited": a SIGKILLed scheduler, e.g. by the OOM killer, sends the main
 * process nothing and /health stays 200; sglang-jax engine.py, see aliveCommand). Prints a dot every 250 ms
 * so a closed channel ends the loop (EPIPE). The scheduler is looked for every 4 s with pgrep (procps, on
 * every TPU VM image; each call reads all of /proc, which on the simulated cloud's one machine is every
 * host's processes); where pgrep is missing it is never "seen", so only the main process's exit counts. A
 * scheduler that dies before the first look is not seen either (model loading takes minutes).
 */
export function watchCommand(pid: number): string {
  return [
    "seen=0; n=0",
    `while ${runningTest(pid)}; do`,
    "  if [ $((n % 16)) = 0 ]; then",
    `    if pgrep -g ${pid} -f '^sglang::scheduler' >/dev/null 2>&1; then seen=1; elif [ $seen = 1 ] && ${runningTest(pid)}; then echo scheduler-exited; exit 0; fi`,
    "  fi",
    "  n=$((n + 1)); echo . || exit 0; sleep 0.25",
    "done",
    "echo exited",
  ].join("\n");
}

/** What watchCommand ended with: the main process exited, or only its scheduler; undefined if neither. */
export function parseWatchEnd(stdout: string): "exited" | "scheduler-exited" | undefined {
  const w = stdout.trim().split("\n").at(-1);
  return w === "exited" || w === "scheduler-exited" ? w : undefined;
}

/**
 * Whether the server of process group `pid` runs: "dead" when its main process is gone; "no-scheduler" when
 * the main process runs but no process of its group is titled `sglang::scheduler…` (sglang-jax's scheduler
 * child, python/sgl_jax/srt/managers/scheduler.py run_scheduler_process: a SIGKILLed scheduler leaves the main
 * process serving /health 200, engine.py); "alive" otherwise. Only the main process's group is searched.
 */
export function aliveCommand(pid: number): string {
  return [
    `if ! { ${runningTest(pid)}; }; then echo dead; exit 0; fi`,
    // Builtins only, as every process of the machine is looked at: its process group (the 3rd field after the
    // command name), then its command line's start (the shell drops the NULs between the arguments).
    "for d in /proc/[0-9]*; do",
    "  read -r _s < $d/stat 2>/dev/null || continue",
    `  _s=\${_s##*) }; set -- $_s; [ "$3" = ${pid} ] || continue`,
    "  _c=; read -r _c < $d/cmdline 2>/dev/null",
    '  case "$_c" in sglang::scheduler*) echo alive; exit 0;; esac',
    "done",
    "echo no-scheduler",
  ].join("\n");
}

/** What aliveCommand printed. */
export function parseAlive(stdout: string): "alive" | "dead" | "no-scheduler" | undefined {
  const w = stdout.trim().split("\n").at(-1);
  return w === "alive" || w === "dead" || w === "no-scheduler" ? w : undefined;
}

export function tailCommand(files: RemoteFiles, lines: number, follow: boolean): string {
  return `cd && tail -n ${Math.max(0, Math.floor(lines))}${follow ? " -F" : ""} ${shellQuote(files.log)} 2>/dev/null${follow ? "" : " || true"}`;
}

// A host's TPU worker number, in the order of the sources that say it (docs/upstream/tpu7x-worker-identity.md):
// `agent-worker-number` (Cloud TPU VMs; JAX's GceTpuCluster reads it), `worker-id` (reported for TPU7x MIG
// VMs), `tpu-env`'s TPU_WORKER_ID then WORKER_ID, and the host's position in `worker-network-endpoints`.
// Also its internal IPv4 and instance name (TPU VMs are `t1v-n-<node>-w-<worker>`: the slice it is in).
// What was tried goes back too, so a host with no source fails naming what it read.
const METADATA_PY = [
  "import json,os,re,urllib.error,urllib.request",
  "h=os.environ.get('GCE_METADATA_HOST') or 'metadata.google.internal'",
  "def g(p):",
  "  try: return urllib.request.urlopen(urllib.request.Request('http://'+h+'/computeMetadata/v1/'+p, headers={'Metadata-Flavor':'Google'}), timeout=5).read().decode().strip()",
  "  except urllib.error.HTTPError as e:",
  "    if e.code == 404: return None",
  "    raise",
  "ip=g('instance/network-interfaces/0/ip'); name=g('instance/name') or ''",
  "tried=[]; wid=None; src=None",
  "for k in ('agent-worker-number','worker-id'):",
  "  v=g('instance/attributes/'+k); tried.append(k+('='+v if v is not None else ' absent'))",
  "  if v is not None and v.isdigit(): wid=int(v); src=k; break",
  "if wid is None:",
  "  env=g('instance/attributes/tpu-env') or ''; tried.append('tpu-env' if env else 'tpu-env absent')",
  "  for k in ('TPU_WORKER_ID','WORKER_ID'):",
  '    m=re.search(r"^"+k+r":\\s*\'?(\\d+)\'?\\s*$", env, re.M)',
  "    if m: wid=int(m.group(1)); src='tpu-env '+k; break",
  "if wid is None:",
  "  eps=g('instance/attributes/worker-network-endpoints'); tried.append('worker-network-endpoints' if eps else 'worker-network-endpoints absent')",
  "  ips=[e.split(':')[-1] for e in (eps or '').split(',') if e]",
  "  if ip in ips: wid=ips.index(ip); src='worker-network-endpoints'",
  "print(json.dumps({'workerId': wid, 'source': src, 'internalIp': ip, 'instanceName': name, 'tried': tried}))",
].join("\n");

/** Reads this host's TPU worker number (and where it came from), internal IPv4 and instance name. */
export function metadataCommand(): string {
  return `python3 -c ${shellQuote(METADATA_PY)}`;
}

/**
 * The slice a Cloud TPU VM belongs to, from its instance name (`t1v-n-<node>-w-<worker>` → `t1v-n-<node>`;
 * JAX's cluster code strips `-w-N` the same way). Other names (TPU7x VMs of a managed instance group are
 * `<base>-<suffix>`) say nothing about slices: undefined, and the deployment is one slice.
 */
export function sliceOfInstance(name: string): string | undefined {
  return /^t1v-n-[0-9a-f]+-w-\d+$/.test(name) ? name.replace(/-w-\d+$/, "") : undefined;
}

// One program per host proves the ports between the hosts (see app/port-check.ts for the protocol):
// - it binds each of its ports on the wildcard, dual-stack where the host has IPv6 ([::], as JAX's coordinator
//   binds P after the handshake: docs/upstream/hostkeys-sglang-facts.md), so a port held on any address
//   (loopback included) fails here as it would fail the server. SO_REUSEADDR only lets a port in TIME_WAIT (an
//   earlier check's) be bound again; on Linux it never allows a bind over a socket that listens. A port it
//   cannot bind: `bind-failed PORT REASON`, exit 3;
// - then says `listening`, accepts (and closes) every connection, and waits for `go` on stdin;
// - on `go` it connects to every target at once (non-blocking, each bounded by the timeout) and prints
//   `result {"ADDRESS:PORT": "ok" | reason}`;
// - it exits when stdin ends (the caller has every host's result) or at its deadline.
const PORT_PROBE_PY = [
  "import errno,json,os,selectors,socket,sys,time",
  "ports=[int(p) for p in sys.argv[1].split(',') if p]; targets=[t for t in sys.argv[2].split(',') if t]",
  "timeout=float(sys.argv[3]); deadline=time.monotonic()+float(sys.argv[4])",
  "def bind(p):",
  "  if socket.has_ipv6:",
  "    try:",
  "      s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
  "      s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(('::',p)); return s",
  "    except OSError as e:",
  "      if e.errno not in (97, 99): raise",
  "  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',p)); return s",
  "sel=selectors.DefaultSelector()",
  "for p in ports:",
  "  try: s=bind(p)",
  "  except OSError as e: print('bind-failed %d %s' % (p, e.strerror), flush=True); sys.exit(3)",
  "  s.listen(1024); s.setblocking(False); sel.register(s, selectors.EVENT_READ, 'accept')",
  "sel.register(0, selectors.EVENT_READ, 'stdin')",
  "print('listening', flush=True)",
  "out={}; pending={}; heard=b''; until=None",
  "def done(s, why):",
  "  sel.unregister(s); s.close(); out[pending.pop(s)]=why",
  "def connect_all():",
  "  for t in targets:",
  "    h,_,p=t.rpartition(':'); s=socket.socket(); s.setblocking(False); e=s.connect_ex((h,int(p)))",
  "    if e in (errno.EINPROGRESS, errno.EALREADY): pending[s]=t; sel.register(s, selectors.EVENT_WRITE, 'connect')",
  "    else: s.close(); out[t]='ok' if e==0 else os.strerror(e)",
  "while time.monotonic()<deadline:",
  "  for key,_ in sel.select(0.2):",
  "    if key.data=='accept':",
  "      try: key.fileobj.accept()[0].close()",
  "      except OSError: pass",
  "    elif key.data=='stdin':",
  "      b=os.read(0, 4096)",
  "      if not b: sys.exit(0)",
  "      heard+=b",
  "      if until is None and b'go\\n' in heard: until=time.monotonic()+timeout; connect_all()",
  "    else:",
  "      e=key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR); done(key.fileobj, 'ok' if e==0 else os.strerror(e))",
  "  if until is not None and time.monotonic()>=until:",
  "    for s in list(pending): done(s, 'timed out')",
  "  if until is not None and not pending and len(out)==len(targets):",
  "    print('result '+json.dumps(out), flush=True); until=float('inf')",
].join("\n");

/**
 * The port probe for one host: listens on `ports` (every address) and, once told `go` on stdin, connects to
 * every `targets` entry (`ADDRESS:PORT`), each within `timeoutSeconds`; gives up after `windowSeconds`.
 */
export function portProbeCommand(ports: number[], targets: string[], timeoutSeconds: number, windowSeconds: number): string {
  for (const t of targets) if (!/^[0-9.]+:\d+$/.test(t)) throw new Error(`not an IPv4 address and port: ${JSON.stringify(t)}`);
  return `python3 -c ${shellQuote(PORT_PROBE_PY)} ${ports.join(",")} ${shellQuote(targets.join(","))} ${timeoutSeconds} ${windowSeconds}`;
}

/** What one line of the probe says: listening, its result ({ADDRESS:PORT: "ok" | reason}), or a port it cannot bind. */
export type PortProbeLine =
  | { kind: "listening" }
  | { kind: "result"; answer: Record<string, string> }
  | { kind: "bind-failed"; port: number; why: string };

export function parsePortProbeLine(line: string): PortProbeLine | undefined {
  if (line === "listening") return { kind: "listening" };
  const bind = /^bind-failed (\d+) (.*)$/.exec(line);
  if (bind) return { kind: "bind-failed", port: Number(bind[1]), why: bind[2] ?? "" };
  if (!line.startsWith("result ")) return undefined;
  try {
    const v: unknown = JSON.parse(line.slice("result ".length));
    if (typeof v !== "object" || v === null || Array.isArray(v)) return undefined;
    const entries = Object.entries(v);
    if (!entries.every(([, x]) => typeof x === "string")) return undefined;
    return { kind: "result", answer: Object.fromEntries(entries) as Record<string, string> };
  } catch {
    return undefined;
  }
}

/** On rank 0: whether the scheduler logged the end of the startup handshake (sglang-jax.md §3). */
export function rendezvousDoneCommand(files: RemoteFiles): string {
  return `cd && if grep -qs 'Succeeds to synchronize' ${shellQuote(files.log)}; then echo yes; else echo no; fi`;
}
