"""How the process ends, mirroring the real process tree in one process.

Real: a scheduler failure logs `Scheduler hit an exception: <traceback>`, the scheduler sends SIGQUIT
to the main process, and the main process SIGKILLs its own tree (exit 137 / -9). Argument errors raise
in the main process before any child exists (traceback, exit 1).
"""

import os
import signal
import sys
import threading
import time
import traceback

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the dir holding sgl_jax/


def fake_traceback(where, exc_line):
    return (
        "Traceback (most recent call last):\n"
        f'  File "{_SRC}/{where}", in run_scheduler_process (sglang-jax test double)\n'
        f"{exc_line}"
    )


class Lifecycle:
    def __init__(self, log, ignore_sigterm=False):
        self.log = log
        self.ignore_sigterm = ignore_sigterm
        self._dying = threading.Lock()
        self._closers = []
        self._notifiers = []
        self._reg = threading.Lock()

    def on_close(self, fn):
        with self._reg:
            self._closers.append(fn)

    def on_death(self, fn):
        """fn(message) tells the other ranks why this one dies (best effort, must not block long)."""
        with self._reg:
            self._notifiers.append(fn)

    def scheduler_failure(self, detail, exc_line, where="sgl_jax/rendezvous.py", logged=False):
        if not self._dying.acquire(blocking=False):
            self._park()
        lines = detail if isinstance(detail, list) else [detail]
        for line in lines if not logged else ():
            self.log.error(line, scheduler=True)
        self.log.sched("Scheduler hit an exception: " + fake_traceback(where, exc_line))
        self._notify("; ".join(lines))
        self.log.info("Received sigquit from a child process. It usually means the child failed.")
        self._end(kill=True)

    def main_failure(self, detail, exc_line, kill=False):
        if not self._dying.acquire(blocking=False):
            self._park()
        self.log.error(detail)
        self.log.info(
            "Traceback (most recent call last):\n"
            f'  File "{_SRC}/sgl_jax/launch_server.py", in main (sglang-jax test double)\n'
            f"{exc_line}"
        )
        self._notify(detail)
        self._end(kill=kill, code=1)

    def thread_crash(self, args):
        """threading.excepthook: a bug in the double must end the process loudly, never hang it."""
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)).rstrip()
        self.scheduler_failure(f"internal error in thread {args.thread.name if args.thread else '?'}", text)

    def _notify(self, message):
        with self._reg:
            notifiers = list(self._notifiers)
        for fn in notifiers:
            try:
                fn(message)
            except Exception:  # noqa: BLE001 - telling peers is best effort
                pass

    def _end(self, kill, code=1):
        if self.ignore_sigterm:
            # faults.server.ignoreSigtermRanks: like the real main process stuck in proc.join(), this
            # process outlives its failure; sockets close (so peers notice) and only SIGKILL ends it.
            with self._reg:
                closers = list(self._closers)
            for fn in closers:
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass
            self.log.info("Main process blocked after the scheduler failed (SIGTERM is ignored); waiting for SIGKILL")
            self._park()
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        if kill:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(code)

    @staticmethod
    def _park():
        while True:
            time.sleep(3600)
