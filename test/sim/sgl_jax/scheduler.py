"""The scheduler process of one rank: `sglang::scheduler_NP<rank>` (`sglang::scheduler` on one node).

As sgl-project/sglang-jax python/sgl_jax/srt/managers/scheduler.py run_scheduler_process and Scheduler.__init__ do it: the proctitle and
PR_SET_PDEATHSIG first; then the TPU identity (libtpu's metadata), the ZMQ sockets and handshake (P+5, P+6),
jax.distributed.initialize (P, bound by rank 0 only now), model load and precompile (collectives across all
hosts), `{"status": "ready"}` to the main process over a pipe, and the event loop. Rank 0 runs the requests the
main process hands it, broadcasting each loop's requests on P+5; ranks >= 1 follow that broadcast.
"""

import os
import signal
import threading
import time

from .faults import FaultsError, crash_due, read_faults
from .jax_dist import CoordinationClient, CoordinationService, JaxInitError
from .lifecycle import SchedulerLifecycle
from .log import Logger
from .proctitle import kill_itself_when_parent_died, setproctitle
from .rendezvous import Publisher, Subscriber, refuse_as_rank0, report_failure
from .server_args import ServerArgs, parse_dist_init_addr
from .topology import TopologyError, is_ipv4, network_of, read_identity, validate_world

SCHED_SRC = "sgl_jax/srt/managers/scheduler.py"
SUB_RCVTIMEO_S = 5.0  # self.subscriber.setsockopt(zmq.RCVTIMEO, 5000)
IDLE_POLL_S = 0.05


class Ctx:
    def __init__(self, sa, log, life, faults, info):
        self.sa = sa
        self.log = log
        self.life = life
        self.faults = faults
        self.info = info


def _peer_address_problem(host, identity):
    """Why a rank >= 1 can tell on its own that rank 0 will never be at HOST (where the real one just waits)."""
    if not is_ipv4(host):
        return (
            f"--dist-init-addr host {host!r} is not a numeric IPv4 address: rank 0 cannot bind it "
            "(ZMQError: No such device), so this rank would wait forever"
        )
    if host == "0.0.0.0":
        return "--dist-init-addr host 0.0.0.0 is not an address another host can reach: use rank 0's internal IP"
    if host in (identity["internal_ip"], identity.get("external_ip")):
        return f"--dist-init-addr host {host} is this host's own address, but this is rank >= 1: use rank 0's internal IP"
    own = network_of(identity["internal_ip"])
    if own is not None:
        iface, net = own
        import ipaddress

        if ipaddress.IPv4Address(host) not in net:
            return (
                f"--dist-init-addr host {host} is not on this host's internal network {net} ({iface}): rank 0 binds "
                "only its internal IP (an external/NAT address is on no interface), so this rank would wait forever"
            )
    return None


def _rank0_address_problem(host, identity):
    internal = identity["internal_ip"]
    if not is_ipv4(host):
        return (
            f"--dist-init-addr host {host!r} is not a numeric IP: rank 0 binds ZMQ sockets to it and libzmq does not "
            f"resolve names for bind; use this host's internal IP {internal}",
            "zmq.error.ZMQError: No such device",
        )
    if host == "0.0.0.0":
        return (
            f"--dist-init-addr host 0.0.0.0 would bind, but the other ranks would connect to 0.0.0.0 (themselves) "
            f"and never reach rank 0; use this host's internal IP {internal}",
            "RuntimeError: --dist-init-addr 0.0.0.0 is unreachable from other hosts",
        )
    if host != internal:
        if host == identity.get("external_ip"):
            why = "is this host's external (NAT) IP, which on GCE is on no local interface"
        elif host.startswith("127.") and not internal.startswith("127."):
            why = "is a loopback address the other hosts cannot reach"
        else:
            why = "is not this host's internal IP"
        return (
            f"cannot bind tcp://{host}: --dist-init-addr host {host} {why}; rank 0's internal IP is {internal}",
            "zmq.error.ZMQError: Cannot assign requested address",
        )
    return None


class Scheduler:
    def __init__(self, sa, log, life, faults, ready_writer, conn):
        self.sa = sa
        self.log = log
        self.life = life
        self.faults = faults
        self.ready_writer = ready_writer
        self.conn = conn  # rank 0: requests from the TokenizerManager, outputs back
        self.rank = sa.node_rank
        self.pub = None
        self.sub = None
        self.client = None
        self.world = {}
        self.cur_batch = None
        self.forward_ct = 0
        self._send_lock = threading.Lock()

    def fail(self, detail, exc_line, **kw):
        self.life.scheduler_failure(detail, exc_line, where=SCHED_SRC, **kw)

    # --- Scheduler.__init__ ---------------------------------------------------------------------
    def start(self):
        sa, log, life, faults, rank = self.sa, self.log, self.life, self.faults, self.rank
        addr = parse_dist_init_addr(sa)  # checked by the main process already
        identity, problem = None, None
        try:
            identity = read_identity()
        except TopologyError as err:
            problem = (str(err), f"RuntimeError: {err}")
        info = dict(identity or {}, rank=rank, nnodes=sa.nnodes, tp_size=sa.tp_size, dp_size=sa.dp_size,
                    ep_size=sa.ep_size, model_path=sa.model_path, dist_init_addr=sa.dist_init_addr)
        if problem is None and not 0 <= rank < sa.nnodes:
            problem = (
                f"--node-rank {rank} is out of range for --nnodes {sa.nnodes} (valid: 0..{sa.nnodes - 1})",
                "ValueError: process_id and num_processes must be nonnegative, with process_id < num_processes",
            )
        bad_address = False
        if problem is None and addr is not None and rank != 0:
            why = _peer_address_problem(addr[0], identity)
            if why:
                bad_address = True
                problem = (why, "sgl_jax.srt.managers.scheduler.SyncError: rank 0 unreachable")
        if problem is not None:
            if addr is not None and rank != 0 and identity and addr[0] == identity["internal_ip"]:
                log.error(problem[0])
                refuse_as_rank0(addr[0], addr[1], f"--dist-init-addr {addr[0]} is rank {rank}'s host, not rank 0's", sa.nnodes - 2)
                self.fail(problem[0], problem[1], logged=True)
            elif addr is not None and rank != 0 and not bad_address:
                # Rank 0 is (probably) there: tell it, so that it does not wait for this rank forever.
                report_failure(addr[0], addr[1], info, problem[0])
            self.fail(problem[0], problem[1])

        ctx = Ctx(sa, log, life, faults, info)
        if crash_due(faults, rank, "before-rendezvous"):
            self._crash("before-rendezvous")
        cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR")
        log.info("XLA persistent compilation cache: " + (f"enabled, dir={cache_dir}, min_compile_time=0s" if cache_dir else "not configured (JAX_COMPILATION_CACHE_DIR unset)"))

        self.world = {0: info}
        if addr is None:
            problems = validate_world(self.world, sa.tp_size, sa.dp_size)
            if problems:
                self.fail(problems, f"AssertionError: JAX mesh needs {sa.tp_size} devices")
        elif rank == 0:
            bad = _rank0_address_problem(addr[0], identity)
            if bad:
                self.fail(bad[0], bad[1])
            self.pub = Publisher(ctx, addr[0], addr[1])
            self.pub.bind()
            self.pub.handshake()
            self.world = self.pub.world
        else:
            self.sub = Subscriber(ctx, addr[0], addr[1])
            self.sub.start_subscriber()  # the SUB socket connects before the handshake, as ZMQ's does
            self.sub.handshake()
        life.clear_notifiers()  # from here on no rank hears why another one stops

        if addr is not None:
            # jax.distributed.initialize(server_args.dist_init_addr, nnodes, node_rank), after sync_pub_sub.
            init_s = faults["jaxInitTimeoutMs"] / 1000.0
            hb_s = faults["jaxHeartbeatTimeoutMs"] / 1000.0
            try:
                if rank == 0:
                    CoordinationService(life, addr[1], sa.nnodes, init_s, hb_s).start()
                self.client = CoordinationClient(life, addr[0], addr[1], rank, sa.nnodes, hb_s)
                self.client.initialize(init_s)
            except JaxInitError as err:
                self.fail(err.detail, err.exc_line)

        if crash_due(faults, rank, "after-rendezvous"):
            self._crash("after-rendezvous")
        if not sa.disable_precompile:
            log.info("[Scheduler] Begins to run worker precompile.")
        time.sleep(faults["loadDelayMs"] / 1000.0)  # "load + compile": no HTTP listener yet
        if not sa.disable_precompile:
            if self.client is not None:
                # Precompiling runs the model on the whole mesh: a collective with every other host.
                self.client.collective("precompile")
            log.info("[Scheduler] Completes worker precompile.")
        if faults["neverReady"]:
            while True:
                time.sleep(3600)
        context_length = sa.context_length or 40960
        self.ready_writer.send({
            "status": "ready",
            "max_total_num_tokens": 262144,
            "max_req_input_len": context_length - 1,
            "world": self.world,
        })
        if crash_due(faults, rank, "after-ready"):
            self._crash("after-ready")
        threading.Thread(target=self.watchdog, name="watchdog", daemon=True).start()
        if rank == 0:
            self.loop_rank0()
        else:
            self.loop_follower()

    def _crash(self, when):
        if (self.faults.get("crash") or {}).get("how") == "sigkill":
            # Test-only knob: the scheduler killed from outside (the OOM killer, an operator's kill -9). It
            # logs nothing and sends the main process no SIGQUIT; the main process only logs the SIGCHLD and
            # lives on, /health 200 (lifecycle.py, after engine.py sigchld_handler).
            os.kill(os.getpid(), signal.SIGKILL)
        self.fail(
            f"rank {self.rank} crashed {when.replace('-', ' ')} (injected: faults.server.crash)",
            "RuntimeError: injected crash (faults.server.crash)",
        )

    # --- event loops ------------------------------------------------------------------------------
    def run_batch(self, bid):
        self.cur_batch = bid
        while self._wedged():
            time.sleep(0.5)  # faults.server.wedged: the engine makes no progress
        if self.client is not None:
            self.client.collective(f"batch-{bid}")  # waits for every host's forward pass, without timeout
        self.forward_ct += 1
        self.cur_batch = None

    @staticmethod
    def _wedged():
        try:
            return bool(read_faults().get("wedged"))
        except FaultsError:
            return False

    @staticmethod
    def _request_time_s():
        try:
            return (read_faults().get("requestTimeMs") or 0) / 1000.0
        except FaultsError:
            return 0.0

    def _reply(self, obj):
        with self._send_lock:
            self.conn.send(obj)

    def loop_rank0(self):
        """event_loop_normal: take the TokenizerManager's requests, broadcast them, run the batch."""
        bid = 0
        waiting = []
        while True:
            reqs = []
            try:
                if self.conn.poll(IDLE_POLL_S):
                    while self.conn.poll():
                        reqs.append(self.conn.recv())
            except (EOFError, OSError):
                return  # the main process is gone (PR_SET_PDEATHSIG ends this process too)
            for r in reqs:
                if r.get("type") == "internal_state":
                    self._reply({"type": "internal_state", "rid": r.get("rid"),
                                 "states": [{"last_gen_throughput": 0.0, "avg_spec_accept_length": None}]})
            waiting.extend(r for r in reqs if r.get("type") == "gen")
            if not waiting:
                if self.pub is not None:
                    self.pub.publish({"type": "REQS", "reqs": []})
                continue
            batch, waiting = waiting, []
            bid += 1
            if self.pub is not None:
                self.pub.publish({"type": "REQS", "reqs": [r.get("rid") for r in batch], "bid": bid})
            self.run_batch(bid)
            per_request = self._request_time_s()
            for r in batch:
                if per_request:
                    time.sleep(per_request)  # faults.server.requestTimeMs: one request at a time
                self._reply({"type": "out", "rid": r.get("rid")})

    def loop_follower(self):
        """Ranks >= 1: run_subscriber, retrying forever when nothing arrives within RCVTIMEO."""
        while True:
            m = self.sub.recv(SUB_RCVTIMEO_S)
            if m is None:
                self.log.info(f"[Subscriber {self.rank}] Fails to receive data with timeout, and try again")
                continue
            bid = m.get("bid")
            if bid is not None:
                self.run_batch(bid)

    def watchdog(self):
        """Scheduler.watchdog_thread, as written (including that idle time is not reset)."""
        timeout = self.sa.watchdog_timeout
        last_ct = 0
        last_time = time.perf_counter()
        while True:
            current = time.perf_counter()
            if self.cur_batch is not None:
                if last_ct == self.forward_ct:
                    if current > last_time + timeout:
                        break
                else:
                    last_ct = self.forward_ct
                    last_time = current
            time.sleep(timeout // 2)
        self.log.info(f"Watchdog timeout (watchdog_timeout={timeout})")
        time.sleep(5)
        try:
            os.kill(self.life.parent_pid, signal.SIGQUIT)
        except OSError:
            pass


def run_scheduler_process(values, ready_writer, conn):
    sa = ServerArgs(values)
    prefix = f" NP{sa.node_rank}" if sa.nnodes > 1 else ""
    kill_itself_when_parent_died()
    setproctitle(f"sglang::scheduler{prefix.replace(' ', '_')}")
    log = Logger(prefix)
    life = SchedulerLifecycle(log, os.getppid())
    threading.excepthook = life.thread_crash
    try:
        faults = read_faults()
    except FaultsError as err:
        life.scheduler_failure(f"bad sim faults: {err}", f"RuntimeError: {err}")
    if sa.node_rank in faults["ignoreSigtermRanks"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Scheduler(sa, log, life, faults, ready_writer, conn).start()
