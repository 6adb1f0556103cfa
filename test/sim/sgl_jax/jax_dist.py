"""`jax.distributed.initialize(HOST:P, nnodes, node_rank)` and what JAX does across hosts afterwards, as
JSON lines over TCP.

- Rank 0 starts the coordination service on `[::]:P` (all addresses, dual-stack: jax-ml/jax jax/_src/distributed.py
  `default_coordinator_bind_address = '[::]:' + port`), and only once the scheduler passed the ZMQ handshake
  (sgl-project/sglang-jax python/sgl_jax/srt/managers/scheduler.py Scheduler.__init__: sync_pub_sub() comes before
  jax.distributed.initialize). Every rank, rank 0 included, connects to HOST:P as a client and waits in the
  connect barrier for all tasks, up to `initialization_timeout` (300 s; faults.server.jaxInitTimeoutMs).
- Heartbeats: the service declares a task dead when it has not heard from it for heartbeat_timeout (100 s;
  faults.server.jaxHeartbeatTimeoutMs) and tells every other task, which terminates with QFATAL; a task that
  gets no heartbeat answer from the service for as long terminates too (openxla/xla xla/pjrt/distributed/client.h).
  A closed TCP connection is not noticed earlier: only the timeout counts.
- Collectives: the cross-host collectives of a forward pass (over ICI/DCN on a real slice) are modelled as a
  barrier at the service: every rank contributes a key and waits, with no timeout, until all did.
"""

import errno
import json
import socket
import threading
import time

FIRST_MESSAGE_TIMEOUT_S = 10.0
CONNECT_RETRY_S = 0.25

# openxla/xla xla/pjrt/distributed/client.h (docs/upstream/hostkeys-sglang-facts.md §C).
SERVICE_FATAL = (
    "Terminating process because the JAX distributed service detected fatal errors. This most likely "
    "indicates that another task died; see the other task logs for more details. Disable Python buffering, "
    "i.e. `python -u`, to be sure to see all the Python logs. Status: {status}"
)
COORDINATOR_GONE = (
    "Terminating process because of missing heartbeat response from the coordinator. This most likely "
    "indicates that the coordinator task died; check the coordinator task's logs."
)
TASK_GONE = (
    "UNAVAILABLE: Task /job:jax_worker/replica:0/task:{rank} heartbeat timeout. This indicates that the remote "
    "task has failed, got preempted, or crashed unexpectedly. Check the task logs for an earlier error to "
    "debug further."
)
BARRIER_TIMEOUT = (
    "jaxlib.xla_extension.XlaRuntimeError: DEADLINE_EXCEEDED: Barrier timed out. Id: PjRT_Client_Connect. "
    "# of tasks that reached the barrier: {got}/{want}"
)


class JaxInitError(Exception):
    def __init__(self, detail, exc_line):
        super().__init__(detail)
        self.detail = detail
        self.exc_line = exc_line


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self._rfile = sock.makefile("rb")
        self._wlock = threading.Lock()

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self._wlock:
            self.sock.sendall(data)

    def recv(self, timeout=None):
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


def heartbeat_interval(timeout_s):
    # The real client sends one every 10 s and gives up after 10 missed ones; a shorter timeout (tests)
    # keeps the same ratio.
    return max(0.05, min(10.0, timeout_s / 10.0))


class CoordinationService:
    """Rank 0 only, inside its scheduler process."""

    def __init__(self, life, port, nnodes, init_timeout_s, hb_timeout_s):
        self.life = life
        self.port = port
        self.n = nnodes
        self.init_timeout_s = init_timeout_s
        self.hb_timeout_s = hb_timeout_s
        self.lock = threading.Condition()
        self.clients = {}  # rank -> _Conn
        self.last_hb = {}
        self.connected = False
        self.failed = None
        self.colls = {}  # key -> set of ranks
        self.listener = None

    def start(self):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = ("::", self.port)
        except OSError:
            # No IPv6 in this kernel: gRPC then binds the IPv4 wildcard instead.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ("0.0.0.0", self.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
            sock.listen(128)
        except OSError as err:
            sock.close()
            raise JaxInitError(
                f"the JAX coordination service cannot listen on [::]:{self.port}: {err.strerror}"
                + (" (a stale server still running on this host?)" if err.errno == errno.EADDRINUSE else ""),
                f"jaxlib.xla_extension.XlaRuntimeError: UNKNOWN: Failed to start the coordination service on "
                f"[::]:{self.port}: {err.strerror}",
            ) from None
        self.listener = sock
        self.life.on_close(sock.close)
        threading.Thread(target=self._accept, name="jax-service", daemon=True).start()
        threading.Thread(target=self._barrier_deadline, name="jax-barrier", daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), name="jax-task", daemon=True).start()

    def _serve(self, sock):
        conn = _Conn(sock)
        try:
            msg = conn.recv(FIRST_MESSAGE_TIMEOUT_S)
        except (OSError, ValueError):
            msg = None
        if msg is None or msg.get("type") != "CONNECT":
            conn.close()  # a port probe, or something that does not speak the protocol
            return
        rank = msg.get("rank")
        with self.lock:
            problem = None
            if not isinstance(rank, int) or not 0 <= rank < self.n:
                problem = f"INVALID_ARGUMENT: Unexpected task /job:jax_worker/replica:0/task:{rank} (num_processes={self.n})"
            elif rank in self.clients:
                problem = f"ALREADY_EXISTS: Task /job:jax_worker/replica:0/task:{rank} is already connected"
            elif self.failed is not None:
                problem = self.failed
            if problem is None:
                self.clients[rank] = conn
                if len(self.clients) == self.n and not self.connected:
                    self.connected = True
                    now = time.monotonic()
                    for r in self.clients:
                        self.last_hb[r] = now
                    for c in self.clients.values():
                        self._send(c, {"type": "CONNECTED"})
                    threading.Thread(target=self._watch_heartbeats, name="jax-hb-watch", daemon=True).start()
        if problem is not None:
            self._send(conn, {"type": "ERROR", "status": problem})
            conn.close()
            return
        while True:
            try:
                m = conn.recv(None)
            except (OSError, ValueError):
                m = None
            if m is None:
                return  # a dead task is noticed by its missing heartbeats only
            kind = m.get("type")
            with self.lock:
                if self.failed is not None:
                    continue  # the service no longer answers
                if kind == "HB":
                    self.last_hb[rank] = time.monotonic()
                    self._send(conn, {"type": "HB_OK"})
                elif kind == "COLL":
                    key = str(m.get("key"))
                    done = self.colls.setdefault(key, set())
                    done.add(rank)
                    if len(done) == self.n:
                        del self.colls[key]
                        for c in self.clients.values():
                            self._send(c, {"type": "COLL_DONE", "key": key})

    @staticmethod
    def _send(conn, obj):
        try:
            conn.send(obj)
        except OSError:
            pass

    def _fail(self, status):
        """Under self.lock: tell every connected task, then stop answering."""
        self.failed = status
        for c in self.clients.values():
            self._send(c, {"type": "ERROR", "status": status})

    def _barrier_deadline(self):
        deadline = time.monotonic() + self.init_timeout_s
        with self.lock:
            while not self.connected and self.failed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(BARRIER_TIMEOUT.format(got=len(self.clients), want=self.n).split(": ", 1)[1])
                    return
                self.lock.wait(min(left, 1.0))

    def _watch_heartbeats(self):
        interval = heartbeat_interval(self.hb_timeout_s)
        while True:
            time.sleep(interval / 2)
            now = time.monotonic()
            with self.lock:
                if self.failed is not None:
                    return
                late = sorted(r for r, t in self.last_hb.items() if now - t > self.hb_timeout_s)
                if late:
                    self._fail(TASK_GONE.format(rank=late[0]))
                    return


class CoordinationClient:
    """Every rank's JAX client (rank 0's talks to its own service over TCP too)."""

    def __init__(self, life, host, port, rank, nnodes, hb_timeout_s):
        self.life = life
        self.host = host
        self.port = port
        self.rank = rank
        self.n = nnodes
        self.hb_timeout_s = hb_timeout_s
        self.conn = None
        self.lock = threading.Condition()
        self.colls_done = set()
        self.last_ok = None

    def initialize(self, timeout_s):
        """Connect and wait in the barrier; raises JaxInitError as jax.distributed.initialize raises."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2.0)
                break
            except OSError as err:
                # The gRPC channel retries until the initialization timeout; a refused or dropped
                # connection is not an error by itself.
                if time.monotonic() >= deadline:
                    raise JaxInitError(
                        f"jax.distributed.initialize timed out after {timeout_s:g} s: cannot reach the coordinator "
                        f"{self.host}:{self.port} ({err.strerror or err}; is TCP port {self.port} open between the hosts?)",
                        BARRIER_TIMEOUT.format(got="?", want=self.n),
                    ) from None
                time.sleep(CONNECT_RETRY_S)
        self.conn = _Conn(sock)
        self.life.on_close(self.conn.close)
        try:
            self.conn.send({"type": "CONNECT", "rank": self.rank})
            reply = self.conn.recv(max(0.1, deadline - time.monotonic()))
        except (OSError, ValueError):
            reply = None
        if reply is None or reply.get("type") != "CONNECTED":
            status = (reply or {}).get("status") or "DEADLINE_EXCEEDED: Barrier timed out. Id: PjRT_Client_Connect."
            raise JaxInitError(
                f"jax.distributed.initialize failed after waiting for the other processes ({timeout_s:g} s at most): {status}",
                f"jaxlib.xla_extension.XlaRuntimeError: {status}",
            )
        self.last_ok = time.monotonic()
        threading.Thread(target=self._read, name="jax-client", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="jax-hb", daemon=True).start()

    def _read(self):
        while True:
            try:
                m = self.conn.recv(None)
            except (OSError, ValueError):
                m = None
            if m is None:
                return  # the coordinator is noticed gone by the missing heartbeat answers
            kind = m.get("type")
            if kind == "HB_OK":
                with self.lock:
                    self.last_ok = time.monotonic()
            elif kind == "COLL_DONE":
                with self.lock:
                    self.colls_done.add(m.get("key"))
                    self.lock.notify_all()
            elif kind == "ERROR":
                self.life.qfatal(SERVICE_FATAL.format(status=m.get("status")))

    def _heartbeat(self):
        interval = heartbeat_interval(self.hb_timeout_s)
        while True:
            try:
                self.conn.send({"type": "HB", "rank": self.rank})
            except OSError:
                pass
            time.sleep(interval)
            with self.lock:
                silent = time.monotonic() - self.last_ok
            if silent > self.hb_timeout_s:
                self.life.qfatal(COORDINATOR_GONE)

    def collective(self, key):
        """Blocks until every rank contributed `key`; no timeout (a dead peer is found by the heartbeat)."""
        try:
            self.conn.send({"type": "COLL", "key": key})
        except OSError:
            pass
        with self.lock:
            while key not in self.colls_done:
                self.lock.wait(1.0)
            self.colls_done.discard(key)
