"""Multi-host start-up of the schedulers: the ZMQ handshake and the request broadcast, as JSON lines over TCP.

Ports on rank 0's HOST (from --dist-init-addr HOST:P), as in the real server (sgl-project/sglang-jax
python/sgl_jax/srt/server_args.py
PortArgs.init_new; managers/scheduler.py Scheduler.__init__, sync_pub_sub, run_publisher, run_subscriber):
  P+6  ZMQ REP (handshake)   ranks >= 1 send READY + their facts; rank 0 answers ACK or ERROR
  P+5  ZMQ PUB               rank 0 broadcasts every loop's requests; ranks >= 1 read them with a 5 s
                             RCVTIMEO. There is no heartbeat: neither side learns that the other died.
Port P (JAX's coordinator) is jax_dist.py's, bound only after this handshake.

Where the real server would hang in the handshake (a duplicate or missing rank, mismatched arguments, ranks
out of TPU worker order), the double fails every member loudly instead, so that a test can tell.
"""

import errno
import json
import queue
import socket
import threading
import time

from .topology import mesh_exception, validate_world

FIRST_MESSAGE_TIMEOUT_S = 10.0
REPORT_WINDOW_S = 15.0
PROBLEM_GRACE_S = 5.0
SAME_ARGS = ("nnodes", "tp_size", "dp_size", "model_path")


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
        # Shut the socket down first: that wakes a thread blocked reading it, which holds the reader's lock
        # that closing the reader needs.
        for fn in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close, self._rfile.close):
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
        self.subs = []
        self.listeners = []
        self._exc = None

    # --- set-up -------------------------------------------------------------------------------
    def bind(self):
        # Scheduler.__init__ binds the PUB socket, then the REP socket; port P stays free until JAX's
        # coordinator starts after the handshake.
        for offset, what in ((5, "PUB"), (6, "REP")):
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
        pub, rep = self.listeners
        _start("rep-accept", self._accept, rep, self._serve_handshake)
        _start("pub-accept", self._accept, pub, self._serve_sub)

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
        # Only ranks still waiting for their ACK hear why rank 0 stops; after the handshake nothing
        # tells them (they find out through JAX's heartbeat, jax_dist.py).
        with self.lock:
            targets = [c for _, c in self.pending.values()] if not self.acked else []
        for conn in targets:
            try:
                conn.send({"type": "ERROR", "message": message, "exc": self._exc}, timeout=1.0)
            except OSError:
                pass

    # --- P+6: handshake -----------------------------------------------------------------------
    def _serve_handshake(self, conn, msg):
        kind = msg.get("type")
        info = msg.get("info") if isinstance(msg.get("info"), dict) else {}
        with self.lock:
            late = self.acked
        if late:
            # After sync_pub_sub rank 0 never reads its REP socket again: a late rank would wait forever
            # and rank 0 serves on. The double answers the late rank (only) with the reason.
            if kind == "READY":
                try:
                    conn.send({"type": "ERROR", "message": (
                        f"{who(info)} sent READY after rank 0 completed the handshake with ranks {sorted(self.world)}: "
                        "start every rank of a job together (the real rank 0 would never answer)"
                    )}, timeout=1.0)
                except OSError:
                    pass
            conn.close()
            return
        if kind == "FAIL":
            self.events.put(("fail", info, msg.get("message", "?"), conn))
            return
        if kind != "READY":
            conn.close()
            return
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

    def _fail_handshake(self, problems, extra=(), exc=None):
        exc = exc or "sgl_jax.srt.managers.scheduler.SyncError: Fail to synchronize between publisher and subscribers"
        for conn in extra:
            try:
                conn.send({"type": "ERROR", "message": "; ".join(problems), "exc": exc}, timeout=1.0)
            except OSError:
                pass
        self._exc = exc
        self.life.scheduler_failure(problems, exc)

    def handshake(self):
        self.log.info(f"[Publisher 0] Begins to synchronize, wait {self.n - 1} Subscribers")
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
                    self.log.info(f"[Publisher 0] receives {count} READY signal")
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
            self._fail_handshake(problems, exc=mesh_exception(self.world, self.sa.tp_size, self.sa.dp_size))
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
        self.log.info("[Publisher 0] Succeeds to synchronize!")

    # --- P+5: the request broadcast ------------------------------------------------------------
    def _serve_sub(self, conn, msg):
        # A ZMQ PUB socket takes every subscriber that connects and never learns that one went away
        # (scheduler.py run_publisher: no acknowledgement, no heartbeat).
        if msg.get("type") != "SUB":
            conn.close()
            return
        with self.lock:
            self.subs.append(conn)
        try:
            while conn.recv(None) is not None:
                pass
        except (OSError, ValueError):
            pass
        with self.lock:
            if conn in self.subs:
                self.subs.remove(conn)

    def publish(self, obj):
        """run_publisher: `self.publisher.send(pickle.dumps(recv_reqs))`, to whoever is subscribed."""
        with self.lock:
            subs = list(self.subs)
        for conn in subs:
            try:
                conn.send(obj)
            except OSError:
                pass


class Subscriber:
    """Ranks ≥ 1."""

    def __init__(self, ctx, host, port):
        self.ctx = ctx
        self.log = ctx.log
        self.life = ctx.life
        self.host = host
        self.port = port
        self.rank = ctx.sa.node_rank

    def _connect(self, port):
        """Like a ZMQ connect: retried forever, silently (the notes only help whoever reads the log)."""
        last_note = time.monotonic()
        started = last_note
        while True:
            try:
                return Conn(socket.create_connection((self.host, port), timeout=2.0))
            except OSError as err:
                now = time.monotonic()
                if now - last_note >= 60:
                    self.log.info(
                        f"[Subscriber {self.rank}] still waiting for rank 0 at tcp://{self.host}:{port} "
                        f"after {now - started:.0f} s ({err.strerror or err})"
                    )
                    last_note = now
                time.sleep(0.25)

    def handshake(self):
        self.log.info(f"[Subscriber {self.rank}] Begins to synchronize")
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
                reply.get("exc") or "sgl_jax.srt.managers.scheduler.SyncError: Fail to synchronize between publisher and subscribers",
            )
        conn.close()
        self.log.info(f"[Subscriber {self.rank}] Succeeds to synchronizes!")

    def start_subscriber(self):
        """The SUB socket: ZMQ connects in the background and retries forever, silently."""
        self.queue = queue.Queue()
        _start("sub-connect", self._subscribe)

    def _subscribe(self):
        conn = self._connect(self.port + 5)
        self.life.on_close(conn.close)
        try:
            conn.send({"type": "SUB", "rank": self.rank})
            while True:
                m = conn.recv(None)
                if m is None:
                    break
                self.queue.put(m)
        except (OSError, ValueError):
            pass
        # The publisher went away. ZMQ would reconnect to whatever binds P+5 next; the double stays
        # disconnected, so a stale rank never receives a later job's requests.

    def recv(self, timeout):
        """The next broadcast, or None after `timeout` seconds (RCVTIMEO)."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


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
