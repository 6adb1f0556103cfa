"""Log lines in the real server's format: `[%Y-%m-%d %H:%M:%S] message`; the scheduler process of a
multi-node run logs `[%Y-%m-%d %H:%M:%S NP<rank>] message` (sgl_jax/srt/utils/common_utils.py
configure_logger, prefix set by managers/scheduler.py run_scheduler_process)."""

import sys
import threading
import time


class Logger:
    def __init__(self, prefix=""):
        self._lock = threading.Lock()
        self.prefix = prefix

    def set_scheduler_prefix(self, nnodes, node_rank):
        self.prefix = f" NP{node_rank}" if nnodes > 1 else ""

    def _write(self, msg):
        ts = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            try:
                sys.stdout.write(f"[{ts}{self.prefix}] {msg}\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # stdout gone: nothing left to tell

    def info(self, msg):
        self._write(msg)

    # The real format carries no level name: a warning looks like any other line.
    warning = info

    def error(self, msg):
        # The double's own explanation of a failure: one greppable line; the real exception text follows.
        self._write(f"ERROR {msg}")
