"""`python -u -m sgl_jax.launch_server ...`: the sglang-jax test double (see test/sim/sgl_jax/README.md and
docs/upstream/sglang-jax.md §10). This is the main process: argument checks, `server_args=ServerArgs(...)`,
then the scheduler child process (scheduler.py), then rank 0's HTTP server or ranks >= 1's dummy health
server (sgl-project/sglang-jax python/sgl_jax/srt/entrypoints/engine.py _launch_subprocesses, http_server.py
launch_server). Logs go to
stdout; nothing is written to disk."""

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import urllib.request

from .faults import FaultsError, read_faults
from .http_server import ApiApp, DummyHealthApp, make_server, serve_in_thread
from .lifecycle import MainLifecycle
from .log import Logger
from .scheduler import run_scheduler_process
from .server_args import ArgsError, check_server_args, parse_dist_init_addr, parse_server_args
from .tokenizer_manager import TokenizerManager


def _warmup_and_announce(sa, log, life, url):
    """http_server.py _wait_and_warmup: /get_model_info, then one /generate, then "fired up"."""
    headers = {"Authorization": f"Bearer {sa.api_key}"} if sa.api_key else {}
    if not sa.skip_server_warmup:
        try:
            for path, data, timeout in (
                ("/get_model_info", None, 30),
                ("/generate", b'{"text": "The capital city of France is", "sampling_params": {"temperature": 0, "max_new_tokens": 2}}', 600),
            ):
                req = urllib.request.Request(url + path, data=data, headers=dict(headers, **({"Content-Type": "application/json"} if data else {})))
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    resp.read()
        except OSError as err:
            # The real one logs this and kill_process_tree()s itself (SIGKILL).
            log.error(f"request to {url} failed: {err}")
            log.info(f"Initialization failed. warmup error: {err}")
            life.kill_tree()
    log.info("The server is fired up and ready to roll!")


def _serve(sa, log, life, app, scheduler):
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
        threading.Thread(target=_warmup_and_announce, args=(sa, log, life, f"http://{host}:{sa.port}"), name="warmup", daemon=True).start()
        threading.Event().wait()  # serve until killed
    # Ranks >= 1: the dummy health server blocks; only after it ends does the main process join the
    # scheduler (engine.py). Here it serves until killed, whatever happens to the scheduler.
    threading.Event().wait()


def run(argv):
    log = Logger()
    try:
        sa = parse_server_args(argv)  # argparse errors exit 2 here
    except ArgsError as err:
        MainLifecycle(log).main_failure(err.detail, err.exc_line)
    life = MainLifecycle(log)
    try:
        faults = read_faults()
    except FaultsError as err:
        life.main_failure(f"bad sim faults: {err}", f"RuntimeError: {err}")
    if sa.node_rank in faults["ignoreSigtermRanks"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        life.ignore_sigterm = True
    try:
        check_server_args(sa)
        parse_dist_init_addr(sa)  # PortArgs.init_new, before the log line
    except ArgsError as err:
        life.main_failure(err.detail, err.exc_line)
    life.install_signal_handlers()
    # engine.py _launch_subprocesses: logger.info("server_args=%s", server_args), the key in clear.
    log.info(f"server_args={sa!r}")

    mp.set_start_method("spawn", force=True)
    reader, writer = mp.Pipe(duplex=False)
    ours, theirs = mp.Pipe(duplex=True)
    proc = mp.Process(target=run_scheduler_process, args=(sa.asdict(), writer, theirs))
    proc.start()
    writer.close()
    theirs.close()
    try:
        data = reader.recv()
    except EOFError:
        if sa.node_rank == 0:
            log.info("Node 0 jax_scheduler is dead. Please check if there are relevant logs.")
            proc.join()
            log.info(f"Exit code: {proc.exitcode}")
        life.main_failure("the scheduler process died before it was ready", "EOFError")
    if data.get("status") != "ready":
        life.main_failure("Initialization failed. Please see the error messages above.", "RuntimeError: Initialization failed. Please see the error messages above.")
    if sa.node_rank == 0:
        tm = TokenizerManager(ours, data)
        _serve(sa, log, life, ApiApp(sa, log, tm, data.get("world") or {}), proc)
    else:
        _serve(sa, log, life, DummyHealthApp(), proc)


def main():
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
