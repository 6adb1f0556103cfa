"""Rank 0's TokenizerManager, in the main process: hands requests to the scheduler process and waits for its
output (sgl-project/sglang-jax python/sgl_jax/srt/managers/tokenizer_manager.py). Nothing times out here: a request to a scheduler that is
dead or stuck in a collective waits until its client goes away, and /get_server_info (which asks the
scheduler for its internal state through a communicator without timeout) waits the same way."""

import itertools
import select
import socket
import threading
import time


class TokenizerManager:
    def __init__(self, conn, scheduler_info):
        self.conn = conn
        self.scheduler_info = scheduler_info
        self.last_receive_tstamp = 0.0
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self._results = {}
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, name="tokenizer-manager", daemon=True).start()

    def _read(self):
        while True:
            try:
                out = self.conn.recv()
            except (EOFError, OSError):
                return  # the scheduler died: nothing ever arrives again
            with self._lock:
                self.last_receive_tstamp = time.time()
                self._results[out.get("rid")] = out
                self._lock.notify_all()

    def submit(self, kind):
        rid = f"{kind}-{next(self._ids)}"
        try:
            with self._send_lock:
                self.conn.send({"type": kind, "rid": rid})
        except OSError:
            pass  # a ZMQ PUSH to a dead scheduler queues silently
        return rid

    def wait(self, rid, client=None, timeout=None):
        """The scheduler's answer to rid; None if the client hung up or `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while rid not in self._results:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                self._lock.wait(0.5)
                if client is not None and _hung_up(client):
                    return None
            return self._results.pop(rid)

    def discard(self, rid):
        with self._lock:
            self._results.pop(rid, None)


def _hung_up(sock):
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
