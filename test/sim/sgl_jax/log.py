"""Log lines in the real server's format: `[%Y-%m-%d %H:%M:%S] message`, scheduler lines with ` NP<rank>`."""

import sys
import threading
import time


class Logger:
    def __init__(self):
        self._lock = threading.Lock()
        self.scheduler_prefix = ""

    def set_scheduler_prefix(self, nnodes, node_rank):
        # The real scheduler configures its logger with " NP<rank>" only on multi-node runs.
        self.scheduler_prefix = f" NP{node_rank}" if nnodes > 1 else ""

    def _write(self, prefix, msg):
        ts = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            try:
                sys.stdout.write(f"[{ts}{prefix}] {msg}\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # stdout gone: nothing left to tell

    def info(self, msg):
        self._write("", msg)

    def sched(self, msg):
        self._write(self.scheduler_prefix, msg)

    def error(self, msg, scheduler=False):
        # One greppable line per failure; the real exception text follows where there is one.
        self._write(self.scheduler_prefix if scheduler else "", f"ERROR {msg}")
