"""How the processes of one rank end, as in the real server's process tree.

The main process (uvicorn and the TokenizerManager on rank 0, the dummy health server on ranks >= 1) and the
scheduler child are separate processes (sgl-project/sglang-jax python/sgl_jax/srt/entrypoints/engine.py
_launch_subprocesses):
- a Python exception in the scheduler logs `Scheduler hit an exception: <traceback>` and sends SIGQUIT to
  the main process (managers/scheduler.py run_scheduler_process), whose handler logs `Received sigquit from a
  child process. It usually means the child failed.` and SIGKILLs its own tree (engine.py
  _set_envs_and_config, sigquit_handler + kill_process_tree): exit 137 / -9;
- a scheduler that dies any other way (SIGKILL, a QFATAL of JAX's coordination client) sends nothing: the
  main process only logs `Child process unexpectedly failed with exitcode=...` (sigchld_handler) and lives on;
- argument errors raise in the main process before any child exists (traceback, exit 1).
"""

import os
import signal
import sys
import threading
import time
import traceback

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the dir holding sgl_jax/


def fake_traceback(where, exc_line, func="run_scheduler_process"):
    return (
        "Traceback (most recent call last):\n"
        f'  File "{_SRC}/{where}", in {func} (sglang-jax test double)\n'
        f"{exc_line}"
    )


def _park():
    while True:
        time.sleep(3600)


def _children_of(pid):
    """Every descendant of pid (psutil.Process(pid).children(recursive=True) in kill_process_tree)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class MainLifecycle:
    def __init__(self, log, ignore_sigterm=False):
        self.log = log
        self.ignore_sigterm = ignore_sigterm
        self._closers = []
        self._lock = threading.Lock()

    def on_close(self, fn):
        with self._lock:
            self._closers.append(fn)

    def install_signal_handlers(self):
        """engine.py _set_envs_and_config: SIGCHLD is only logged, SIGQUIT kills the whole tree."""
        signal.signal(signal.SIGCHLD, self._sigchld)
        signal.signal(signal.SIGQUIT, self._sigquit)

    def _sigchld(self, signum, frame):
        # sigchld_handler: `pid, exitcode = os.waitpid(0, os.WNOHANG)`; the value is a raw wait status
        # (9 for SIGKILL, 256 for exit 1).
        try:
            pid, status = os.waitpid(0, os.WNOHANG)
        except ChildProcessError:
            return
        if status != 0:
            self.log.warning(f"Child process unexpectedly failed with exitcode={status}. pid={pid}")

    def _sigquit(self, signum, frame):
        self.log.info("Received sigquit from a child process. It usually means the child failed.")
        if self.ignore_sigterm:
            self._stay("the scheduler failed")
        self.kill_tree()

    def kill_tree(self):
        """kill_process_tree(os.getpid()): SIGKILL every descendant, then itself (exit 137)."""
        for pid in _children_of(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    def main_failure(self, detail, exc_line):
        self.log.error(detail)
        self.log.info(fake_traceback("sgl_jax/launch_server.py", exc_line, func="main"))
        if self.ignore_sigterm:
            self._stay("the main process failed")
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(1)

    def _stay(self, why):
        # faults.server.ignoreSigtermRanks: a process that outlives its failure (as a main process stuck in
        # proc.join() would); its listeners close, and only SIGKILL ends it.
        with self._lock:
            closers = list(self._closers)
        for fn in closers:
            try:
                fn()
            except Exception:  # noqa: BLE001
                pass
        self.log.info(f"Main process blocked after {why} (SIGTERM is ignored); waiting for SIGKILL")
        _park()


class SchedulerLifecycle:
    def __init__(self, log, parent_pid):
        self.log = log
        self.parent_pid = parent_pid
        self._dying = threading.Lock()
        self._closers = []
        self._notifiers = []
        self._reg = threading.Lock()

    def on_close(self, fn):
        with self._reg:
            self._closers.append(fn)

    def on_death(self, fn):
        """fn(message) tells the other ranks why this one dies, while they still wait in the handshake
        (the double is louder than the real server there); best effort, must not block long."""
        with self._reg:
            self._notifiers.append(fn)

    def clear_notifiers(self):
        with self._reg:
            self._notifiers = []

    def scheduler_failure(self, detail, exc_line, where="sgl_jax/srt/managers/scheduler.py", logged=False):
        if not self._dying.acquire(blocking=False):
            _park()
        lines = detail if isinstance(detail, list) else [detail]
        for line in lines if not logged else ():
            self.log.error(line)
        # run_scheduler_process: logger.error("Scheduler hit an exception: %s", traceback), then
        # parent_process.send_signal(signal.SIGQUIT), and the function returns.
        self.log.info("Scheduler hit an exception: " + fake_traceback(where, exc_line))
        self._notify("; ".join(lines))
        try:
            os.kill(self.parent_pid, signal.SIGQUIT)
        except OSError:
            pass
        self._close()
        self._exit(0)

    def qfatal(self, message):
        """LOG(QFATAL) of XLA's coordination client: one fatal line on stderr, no Python exception (so no
        SIGQUIT to the main process), exit 1."""
        now = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int((now % 1) * 1e6):06d}"
        try:
            sys.stderr.write(f"F{stamp} {threading.get_native_id():>7} client.cc:0] {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        self._exit(1)

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

    def _close(self):
        with self._reg:
            closers = list(self._closers)
        for fn in closers:
            try:
                fn()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _exit(code):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)
