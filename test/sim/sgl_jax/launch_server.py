"""`python -u -m sgl_jax.launch_server ...`: the sglang-jax test double (see test/sim/README.md and
docs/upstream/sglang-jax.md §10). Logs go to stdout; nothing is written to disk."""

import os
import signal
import sys
import threading
import time
import urllib.request

from .faults import FaultsError, crash_due, read_faults
from .http_server import ApiApp, DummyHealthApp, make_server, serve_in_thread
from .lifecycle import Lifecycle
from .log import Logger
from .rendezvous import Publisher, Subscriber, refuse_as_rank0, report_failure
from .server_args import ArgsError, check_server_args, parse_dist_init_addr, parse_server_args
from .topology import TopologyError, is_ipv4, network_of, read_identity, validate_world

SCHED_SRC = "sgl_jax/srt/managers/scheduler.py"


class Ctx:
    def __init__(self, sa, log, life, faults, info):
        self.sa = sa
        self.log = log
        self.life = life
        self.faults = faults
        self.info = info


def _crash(life, rank, when):
    life.scheduler_failure(
        f"rank {rank} crashed {when.replace('-', ' ')} (injected: faults.server.crash)",
        "RuntimeError: injected crash (faults.server.crash)",
        where=SCHED_SRC,
    )


def _peer_address_problem(host, identity):
    """Why a rank ≥1 can tell on its own that rank 0 will never be at HOST (where the real one just waits)."""
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


def _warmup_and_announce(ctx, url):
    """`_wait_and_warmup`: /get_model_info, then a /generate, then "fired up"."""
    sa, log = ctx.sa, ctx.log
    headers = {"Authorization": f"Bearer {sa.api_key}"} if sa.api_key else {}
    if not sa.skip_server_warmup:
        started = time.monotonic()
        while read_faults().get("wedged"):
            # A wedged engine never answers the warmup request; the real one gives up after 600 s.
            if time.monotonic() - started > 600:
                ctx.life.main_failure("Initialization failed. warmup error: the warmup /generate timed out after 600 s",
                                      "requests.exceptions.ReadTimeout: Read timed out. (read timeout=600)", kill=True)
            time.sleep(1)
        try:
            for path, data in (("/get_model_info", None), ("/generate", b'{"text": "The capital city of France is", "sampling_params": {"temperature": 0, "max_new_tokens": 2}}')):
                req = urllib.request.Request(url + path, data=data, headers=dict(headers, **({"Content-Type": "application/json"} if data else {})))
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
        except OSError as err:
            # The real one logs this and kill_process_tree()s itself (SIGKILL).
            ctx.life.main_failure(f"Initialization failed. warmup error: request to {url} failed: {err}", f"AssertionError: {err}", kill=True)
    log.info("The server is fired up and ready to roll!")


def _serve(ctx, world):
    sa, log, life = ctx.sa, ctx.log, ctx.life
    app = ApiApp(ctx, world) if sa.node_rank == 0 else DummyHealthApp()
    if sa.node_rank != 0:
        log.info(f"Starting dummy health check server at {sa.host}:{sa.port}")
    try:
        server = make_server(sa.host, sa.port, app)
    except OSError as err:
        life.main_failure(
            f"[Errno {err.errno}] error while attempting to bind on address ({sa.host!r}, {sa.port}): {err.strerror}",
            f"OSError: [Errno {err.errno}] {err.strerror}",
        )
    serve_in_thread(server)

    def stop_http():
        # shutdown() waits for the serving loop, so it runs on its own thread; closing the socket under a
        # running serve_forever() alone would make it spin.
        threading.Thread(target=server.shutdown, daemon=True).start()
        server.server_close()

    life.on_close(stop_http)
    if sa.node_rank == 0:
        log.info(f"Started server process [{os.getpid()}]")
        log.info("Waiting for application startup.")
        log.info("Application startup complete.")
        log.info(f"Uvicorn running on http://{sa.host}:{sa.port} (Press CTRL+C to quit)")
        host = f"[{sa.host}]" if ":" in sa.host else sa.host
        threading.Thread(target=_warmup_and_announce, args=(ctx, f"http://{host}:{sa.port}"), name="warmup", daemon=True).start()
    threading.Event().wait()  # serve until killed


def run(argv):
    log = Logger()
    try:
        sa = parse_server_args(argv)  # argparse errors exit 2 here
    except ArgsError as err:
        Lifecycle(log).main_failure(err.detail, err.exc_line)
    life = Lifecycle(log)
    threading.excepthook = life.thread_crash
    try:
        faults = read_faults()
    except FaultsError as err:
        life.main_failure(f"bad sim faults: {err}", f"RuntimeError: {err}")
    rank = sa.node_rank
    if rank in faults["ignoreSigtermRanks"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        life.ignore_sigterm = True
    try:
        check_server_args(sa)
        addr = parse_dist_init_addr(sa)
    except ArgsError as err:
        life.main_failure(err.detail, err.exc_line)
    log.info(f"server_args={sa!r}")
    log.set_scheduler_prefix(sa.nnodes, rank)

    # From here on, what fails is the scheduler (a child process in the real server).
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
            log.error(problem[0], scheduler=True)
            refuse_as_rank0(addr[0], addr[1], f"--dist-init-addr {addr[0]} is rank {rank}'s host, not rank 0's", sa.nnodes - 2)
            life.scheduler_failure(problem[0], problem[1], where=SCHED_SRC, logged=True)
        elif addr is not None and rank != 0 and not bad_address:
            # Rank 0 is (probably) there: tell it, so that it does not wait for this rank forever.
            report_failure(addr[0], addr[1], info, problem[0])
        life.scheduler_failure(problem[0], problem[1], where=SCHED_SRC)

    ctx = Ctx(sa, log, life, faults, info)
    if crash_due(faults, rank, "before-rendezvous"):
        _crash(life, rank, "before-rendezvous")
    cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    log.sched("XLA persistent compilation cache: " + (f"enabled, dir={cache_dir}, min_compile_time=0s" if cache_dir else "not configured (JAX_COMPILATION_CACHE_DIR unset)"))

    world = {0: info}
    if addr is None:
        problems = validate_world(world, sa.tp_size, sa.dp_size)
        if problems:
            life.scheduler_failure(problems, f"AssertionError: JAX mesh needs {sa.tp_size} devices", where=SCHED_SRC)
    elif rank == 0:
        bad = _rank0_address_problem(addr[0], identity)
        if bad:
            life.scheduler_failure(bad[0], bad[1], where=SCHED_SRC)
        pub = Publisher(ctx, addr[0], addr[1])
        pub.bind()
        pub.handshake()
        pub.jax_init(faults["jaxInitTimeoutMs"] / 1000.0)
        world = pub.world
    else:
        sub = Subscriber(ctx, addr[0], addr[1])
        sub.handshake()
        sub.jax_init(faults["jaxInitTimeoutMs"] / 1000.0)

    if crash_due(faults, rank, "after-rendezvous"):
        _crash(life, rank, "after-rendezvous")
    if not sa.disable_precompile:
        log.sched("[Scheduler] Begins to run worker precompile.")
    time.sleep(faults["loadDelayMs"] / 1000.0)  # "load + compile": no HTTP listener yet
    if not sa.disable_precompile:
        log.sched("[Scheduler] Completes worker precompile.")
    if faults["neverReady"]:
        while True:
            time.sleep(3600)
    _serve(ctx, world)


def main():
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
