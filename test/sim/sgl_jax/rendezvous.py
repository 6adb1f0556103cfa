"""Multi-host start-up: the ZMQ PUB/REP handshake and the JAX coordinator, as plain TCP with JSON lines.

Ports on rank 0's HOST (from --dist-init-addr HOST:P), as in the real server:
  P    JAX coordination service   every rank ≥1 sends JAX_INIT, rank 0 answers JAX_OK when all are in
  P+5  ZMQ PUB (kept for life)    ranks ≥1 send SUB; both sides then exchange heartbeats, so the death
                                  of either end is noticed within HEARTBEAT_TIMEOUT_S
  P+6  ZMQ REP (handshake)        ranks ≥1 send READY + their facts; rank 0 answers ACK or ERROR

Where the real server would hang (a duplicate or missing rank, mismatched arguments, ranks out of TPU
worker order), the double fails every member loudly instead, so that a test can tell.
"""

import errno
import json
import queue
import socket
import threading
import time

from .topology import validate_world

HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 3.0
FIRST_MESSAGE_TIMEOUT_S = 10.0
REPORT_WINDOW_S = 15.0
PROBLEM_GRACE_S = 5.0
SAME_ARGS = ("nnodes", "tp_size", "dp_size", "model_path")
JAX_TIMEOUT_EXC = (
    "jaxlib.xla_extension.XlaRuntimeError: DEADLINE_EXCEEDED: Barrier timed out. "
    "Id: PjRT_Client_Connect. # of tasks that reached the barrier: {got}/{want}"
)


class Conn:
    """A TCP connection carrying one JSON object per line."""

    def __init__(self, sock):
        self.sock = sock
        self.peer = sock.getpeername()
        self._rfile = sock.makefile("rb")
        self._wlock = threading.Lock()

    def send(self, obj, timeout=None):
        # The timeout is per socket and shared with a reader thread: only set it when dying.
        data = (json.dumps(obj) + "\n").encode()
        with self._wlock:
            if timeout is not None:
                self.sock.settimeout(timeout)
            self.sock.sendall(data)

    def recv(self, timeout=None):
        """The next object; None on EOF. Raises OSError (socket.timeout included) or ValueError."""
        self.sock.settimeout(timeout)
        line = self._rfile.readline(1 << 20)
        if not line:
            return None
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj

    def close(self):
        for fn in (self._rfile.close, lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                fn()
            except OSError:
                pass


def _start(name, target, *args):
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t


def who(info):
    return f"rank {info.get('rank')} ({info.get('internal_ip')}, TPU worker {info.get('worker_id')})"


class Publisher:
    """Rank 0."""

    def __init__(self, ctx, host, port):
        self.ctx = ctx
        self.sa = ctx.sa
        self.log = ctx.log
        self.life = ctx.life
        self.host = host
        self.port = port
        self.n = ctx.sa.nnodes
        self.events = queue.Queue()
        self.lock = threading.Condition()
        self.pending = {}  # rank -> (info, Conn) waiting for ACK
        self.acked = False
        self.world = {0: ctx.info}
        self.jax_conns = {}
        self.subs = {}
        self.listeners = []

    # --- set-up -------------------------------------------------------------------------------
    def bind(self):
        for offset, what in ((6, "REP"), (5, "PUB"), (0, "JAX coordinator")):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            port = self.port + offset
            try:
                sock.bind((self.host, port))
                sock.listen(128)
            except OSError as err:
                sock.close()
                if err.errno == errno.EADDRINUSE:
                    self.life.scheduler_failure(
                        f"cannot bind the {what} socket tcp://{self.host}:{port}: the port is in use "
                        "(a stale server still running on this host?)",
                        "zmq.error.ZMQError: Address already in use",
                    )
                self.life.scheduler_failure(
                    f"cannot bind the {what} socket tcp://{self.host}:{port}: {err.strerror}",
                    f"zmq.error.ZMQError: {err.strerror}",
                )
            self.listeners.append(sock)
            self.life.on_close(sock.close)
        self.life.on_death(self._tell_everyone)
        rep, pub, coord = self.listeners
        _start("rep-accept", self._accept, rep, self._serve_handshake)
        _start("pub-accept", self._accept, pub, self._serve_sub)
        _start("jax-accept", self._accept, coord, self._serve_jax)

    def _accept(self, listener, handler):
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            _start("conn", self._first_message, sock, handler)

    def _first_message(self, sock, handler):
        try:
            conn = Conn(sock)
            msg = conn.recv(FIRST_MESSAGE_TIMEOUT_S)
        except (OSError, ValueError):
            msg = None
        if msg is None:
            # A port probe or a foreign client: nothing the real ZMQ socket would act on.
            try:
                sock.close()
            except OSError:
                pass
            return
        handler(conn, msg)

    def _tell_everyone(self, message):
        with self.lock:
            targets = [c for _, c in self.pending.values()] + list(self.subs.values())
        for conn in targets:
            try:
                conn.send({"type": "ERROR" if not self.acked else "ABORT", "message": message}, timeout=1.0)
            except OSError:
                pass

    # --- P+6: handshake -----------------------------------------------------------------------
    def _serve_handshake(self, conn, msg):
        kind = msg.get("type")
        info = msg.get("info") if isinstance(msg.get("info"), dict) else {}
        if kind == "FAIL":
            with self.lock:
                late = self.acked
            if late:
                self.life.scheduler_failure(
                    f"{who(info)} failed to start: {msg.get('message', '?')}",
                    "RuntimeError: a rank failed after synchronization",
                )
            self.events.put(("fail", info, msg.get("message", "?"), conn))
            return
        if kind != "READY":
            conn.close()
            return
        with self.lock:
            late = self.acked
        if late:
            problem = self._arrival_problem(info) or (
                f"{who(info)} sent READY after the handshake completed with ranks {sorted(self.world)}"
            )
            self.life.scheduler_failure(
                [problem, "a rank joined after the handshake: every member stops"],
                "RuntimeError: unexpected READY after synchronization",
            )
        self.events.put(("ready", info, None, conn))
        try:
            while conn.recv(None) is not None:
                pass
        except (OSError, ValueError):
            pass
        with self.lock:
            acked = self.acked
        if not acked:
            self.events.put(("gone", info, None, conn))

    def _arrival_problem(self, info):
        me = self.ctx.info
        for key in SAME_ARGS:
            if info.get(key) != me.get(key):
                flag = {"model_path": "model-path", "tp_size": "tp-size", "dp_size": "dp-size"}.get(key, key)
                return (
                    f"{who(info)} was started with --{flag} {info.get(key)} but rank 0 with --{flag} {me.get(key)}: "
                    "every host needs the same arguments except --node-rank"
                )
        rank = info.get("rank")
        if not isinstance(rank, int) or not 1 <= rank < self.n:
            return (
                f"{who(info)} is out of range for --nnodes {self.n} (ranks 1..{self.n - 1} join rank 0); "
                "JAX would fail with: process_id and num_processes must be nonnegative, with process_id < num_processes"
            )
        if rank in self.pending or (self.acked and rank in self.world):
            first = self.pending[rank][0] if rank in self.pending else self.world[rank]
            return f"rank {rank} joined twice: from {first.get('internal_ip')} (worker {first.get('worker_id')}) and {info.get('internal_ip')} (worker {info.get('worker_id')})"
        return None

    def _fail_handshake(self, problems, extra=()):
        for conn in extra:
            try:
                conn.send({"type": "ERROR", "message": "; ".join(problems)}, timeout=1.0)
            except OSError:
                pass
        self.life.scheduler_failure(problems, "sgl_jax.srt.managers.scheduler.SyncError: Fail to synchronize between publisher and subscribers")

    def handshake(self):
        self.log.sched(f"[Publisher 0] Begins to synchronize, wait {self.n - 1} Subscribers")
        # A bad arrival does not fail the job at once: rank 0 first waits (up to PROBLEM_GRACE_S) for
        # the other ranks to connect too, so that every member hears why and exits.
        problems, rejected, arrivals, first_problem = [], [], 0, None
        while True:
            with self.lock:
                complete = len(self.pending) == self.n - 1
            if complete or (problems and arrivals >= self.n - 1):
                break
            wait = None if first_problem is None else first_problem + PROBLEM_GRACE_S - time.monotonic()
            try:
                kind, info, message, conn = self.events.get(timeout=None if wait is None else max(0.0, wait))
            except queue.Empty:
                break
            problem = None
            if kind == "fail":
                arrivals += 1
                problem = f"{who(info)} failed to start: {message}"
            elif kind == "gone":
                problem = f"{who(info)} disconnected during the handshake (it died or was killed)"
            else:
                arrivals += 1
                with self.lock:
                    problem = self._arrival_problem(info)
                    if problem is None:
                        self.pending[info["rank"]] = (info, conn)
                        count = len(self.pending)
                if problem is None:
                    self.log.sched(f"[Publisher 0] receives {count} READY signal")
                else:
                    rejected.append(conn)
            if problem is not None:
                problems.append(problem)
                first_problem = first_problem or time.monotonic()
        if problems:
            self._fail_handshake(problems, rejected)
        with self.lock:
            for rank, (info, _) in self.pending.items():
                self.world[rank] = info
        problems = validate_world(self.world, self.sa.tp_size, self.sa.dp_size)
        if problems:
            self._fail_handshake(problems)
        with self.lock:
            self.acked = True
            pending = list(self.pending.values())
        for info, conn in pending:
            try:
                conn.send({"type": "ACK", "ranks": sorted(self.world)})
            except OSError:
                self.life.scheduler_failure(f"{who(info)} went away before its ACK", "zmq.error.ZMQError: Connection reset")
        with self.lock:
            self.pending = {}
        self.log.sched("[Publisher 0] Succeeds to synchronize!")

    # --- P and P+5: JAX init and the lifelong PUB link ------------------------------------------
    def _joined_rank(self, msg, table, what):
        rank = msg.get("rank")
        with self.lock:
            if not self.acked or rank not in self.world or rank == 0:
                problem = f"a process claiming rank {rank} connected to the {what} but is not part of the handshake"
            elif rank in table:
                problem = f"rank {rank} connected to the {what} twice"
            else:
                return rank, None
        return rank, problem

    def _serve_jax(self, conn, msg):
        if msg.get("type") != "JAX_INIT":
            conn.close()
            return
        rank, problem = self._joined_rank(msg, self.jax_conns, f"JAX coordinator {self.host}:{self.port}")
        if problem:
            self.life.scheduler_failure(problem, "jaxlib.xla_extension.XlaRuntimeError: ALREADY_EXISTS: duplicate task")
        with self.lock:
            self.jax_conns[rank] = conn
            self.lock.notify_all()

    def _serve_sub(self, conn, msg):
        if msg.get("type") != "SUB":
            conn.close()
            return
        rank, problem = self._joined_rank(msg, self.subs, f"publisher tcp://{self.host}:{self.port + 5}")
        if problem:
            self.life.scheduler_failure(problem, "RuntimeError: unexpected subscriber")
        with self.lock:
            self.subs[rank] = conn
            self.lock.notify_all()
        info = self.world[rank]
        _start(f"hb-send-{rank}", self._heartbeat, rank, conn, info)
        try:
            while True:
                m = conn.recv(HEARTBEAT_TIMEOUT_S)
                if m is None:
                    why = "its connection to the publisher closed"
                    break
        except (OSError, ValueError) as err:
            why = f"no heartbeat for {HEARTBEAT_TIMEOUT_S:.0f} s ({err or 'timeout'})"
        self.life.scheduler_failure(
            f"lost {who(info)}: {why}; the process on that host died",
            f"RuntimeError: node {rank} of {self.n} is gone (jax.distributed heartbeat)",
        )

    def _heartbeat(self, rank, conn, info):
        while True:
            try:
                conn.send({"type": "HB"})
            except OSError as err:
                self.life.scheduler_failure(
                    f"lost {who(info)}: cannot reach it ({err})",
                    f"RuntimeError: node {rank} of {self.n} is gone (jax.distributed heartbeat)",
                )
            time.sleep(HEARTBEAT_INTERVAL_S)

    def jax_init(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        want = set(range(1, self.n))
        with self.lock:
            while set(self.jax_conns) != want or set(self.subs) != want:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(min(left, 1.0))
            jax_missing = sorted(want - set(self.jax_conns))
            sub_missing = sorted(want - set(self.subs))
            conns = list(self.jax_conns.values())
        if jax_missing or sub_missing:
            problems = []
            if jax_missing:
                problems.append(
                    f"jax.distributed.initialize timed out after {timeout_s:g} s: ranks {jax_missing} never reached "
                    f"the coordinator {self.host}:{self.port} (is TCP port {self.port} open between the hosts?)"
                )
            if sub_missing:
                problems.append(
                    f"ranks {sub_missing} never connected to the publisher tcp://{self.host}:{self.port + 5} "
                    f"(is TCP port {self.port + 5} open between the hosts?)"
                )
            self.life.scheduler_failure(problems, JAX_TIMEOUT_EXC.format(got=self.n - len(jax_missing), want=self.n))
        for conn in conns:
            try:
                conn.send({"type": "JAX_OK"})
            except OSError:
                pass
            conn.close()


class Subscriber:
    """Ranks ≥ 1."""

    def __init__(self, ctx, host, port):
        self.ctx = ctx
        self.log = ctx.log
        self.life = ctx.life
        self.host = host
        self.port = port
        self.rank = ctx.sa.node_rank

    def _connect(self, port, deadline=None, refused_is_fatal=False):
        last_note = time.monotonic()
        started = last_note
        while True:
            try:
                return Conn(socket.create_connection((self.host, port), timeout=2.0))
            except OSError as err:
                if refused_is_fatal and err.errno == errno.ECONNREFUSED:
                    self.life.scheduler_failure(
                        f"rank 0 ({self.host}) refuses connections on port {port} after the handshake: rank 0 is gone",
                        "RuntimeError: coordinator unavailable",
                    )
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                if now - last_note >= 60:
                    # ZMQ retries silently; this note only helps whoever reads the log.
                    self.log.sched(
                        f"[Subscriber {self.rank}] still waiting for rank 0 at tcp://{self.host}:{port} "
                        f"after {now - started:.0f} s ({err.strerror or err})"
                    )
                    last_note = now
                time.sleep(0.25)

    def handshake(self):
        self.log.sched(f"[Subscriber {self.rank}] Begins to synchronize")
        conn = self._connect(self.port + 6)  # forever, like ZMQ
        try:
            conn.send({"type": "READY", "info": self.ctx.info})
            reply = conn.recv(None)
        except (OSError, ValueError) as err:
            reply = {"type": "?", "message": str(err)}
        if reply is None:
            self.life.scheduler_failure(
                f"rank 0 ({self.host}:{self.port + 6}) closed the handshake connection before its ACK: it died",
                "sgl_jax.srt.managers.scheduler.SyncError: Fail to synchronize between publisher and subscribers",
            )
        if reply.get("type") != "ACK":
            self.life.scheduler_failure(
                f"{reply.get('from', 'rank 0')} rejected the job: {reply.get('message', reply)}",
                "sgl_jax.srt.managers.scheduler.SyncError: Fail to synchronize between publisher and subscribers",
            )
        conn.close()
        self.log.sched(f"[Subscriber {self.rank}] Succeeds to synchronizes!")

    def jax_init(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        sub = self._connect(self.port + 5, deadline, refused_is_fatal=True)
        if sub is None:
            self._timeout(timeout_s, self.port + 5)
        self.life.on_close(sub.close)
        sub.send({"type": "SUB", "rank": self.rank})
        _start("sub-read", self._watch_rank0, sub)
        _start("sub-hb", self._heartbeat, sub)
        coord = self._connect(self.port, deadline, refused_is_fatal=True)
        if coord is None:
            self._timeout(timeout_s, self.port)
        try:
            coord.send({"type": "JAX_INIT", "rank": self.rank})
            reply = coord.recv(max(0.1, deadline - time.monotonic()))
        except (OSError, ValueError):
            self._timeout(timeout_s, self.port)
        if reply is None:
            self.life.scheduler_failure(
                f"the JAX coordinator {self.host}:{self.port} closed the connection: rank 0 is gone",
                "jaxlib.xla_extension.XlaRuntimeError: UNAVAILABLE: Failed to connect to coordination service",
            )
        coord.close()

    def _timeout(self, timeout_s, port):
        self.life.scheduler_failure(
            f"jax.distributed.initialize timed out after {timeout_s:g} s: cannot reach rank 0 at "
            f"{self.host}:{port} (is TCP port {port} open between the hosts?)",
            "jaxlib.xla_extension.XlaRuntimeError: DEADLINE_EXCEEDED: Barrier timed out",
        )

    def _watch_rank0(self, sub):
        why = None
        try:
            while True:
                m = sub.recv(HEARTBEAT_TIMEOUT_S)
                if m is None:
                    why = "its publisher connection closed"
                    break
                if m.get("type") == "ABORT":
                    self.life.scheduler_failure(
                        f"rank 0 failed and stops the job: {m.get('message')}",
                        "RuntimeError: rank 0 aborted",
                    )
        except (OSError, ValueError) as err:
            why = f"no heartbeat for {HEARTBEAT_TIMEOUT_S:.0f} s ({err or 'timeout'})"
        self.life.scheduler_failure(
            f"lost rank 0 ({self.host}): {why}; rank 0 died, so this rank stops too",
            "RuntimeError: node 0 is gone (jax.distributed heartbeat)",
        )

    def _heartbeat(self, sub):
        while True:
            try:
                sub.send({"type": "HB"})
            except OSError:
                return  # the reader notices and reports
            time.sleep(HEARTBEAT_INTERVAL_S)


def report_failure(host, port, info, message):
    """A rank ≥1 that cannot start tells rank 0, so that rank 0 does not wait for it forever."""
    deadline = time.monotonic() + REPORT_WINDOW_S
    while time.monotonic() < deadline:
        try:
            conn = Conn(socket.create_connection((host, port + 6), timeout=2.0))
        except OSError:
            time.sleep(0.25)
            continue
        try:
            conn.send({"type": "FAIL", "info": info, "message": message})
        except OSError:
            pass
        conn.close()
        return True
    return False


def refuse_as_rank0(host, port, message, expect):
    """A rank ≥1 that --dist-init-addr points at answers the other ranks' READY with the reason (until
    `expect` ranks were told, or for REPORT_WINDOW_S), so that they stop instead of waiting forever."""
    try:
        listener = socket.create_server((host, port + 6), reuse_port=False)
    except OSError:
        return
    listener.settimeout(0.5)
    deadline = time.monotonic() + REPORT_WINDOW_S
    told = set()
    while time.monotonic() < deadline and len(told) < expect:
        try:
            sock, _ = listener.accept()
        except OSError:
            continue
        try:
            conn = Conn(sock)
            msg = conn.recv(2.0)
            if msg is not None:
                conn.send({"type": "ERROR", "from": f"the process at {host}", "message": message}, timeout=1.0)
                info = msg.get("info") if isinstance(msg.get("info"), dict) else {}
                told.add(info.get("rank"))
            conn.close()
        except (OSError, ValueError):
            pass
    listener.close()
