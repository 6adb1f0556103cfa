"""setproctitle without the setproctitle package: what `ps`, `pgrep -f` and /proc/<pid>/cmdline show.

The real scheduler calls `setproctitle.setproctitle(f"sglang::scheduler{prefix}")` (sgl-project/sglang-jax
python/sgl_jax/srt/managers/scheduler.py, run_scheduler_process). That library overwrites the process's
original argv area; here the area is found from /proc/self/stat (arg_start, arg_end: fields 48 and 49) and
overwritten the same way, padded with NULs, so /proc/<pid>/cmdline starts with the title.
"""

import ctypes
import ctypes.util

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setproctitle(title):
    with open("/proc/self/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): field N is fields[N - 3].
    arg_start, arg_end = int(fields[45]), int(fields[46])
    size = arg_end - arg_start
    data = title.encode()[: max(0, size - 1)]
    ctypes.memmove(arg_start, data + b"\0" * (size - len(data)), size)
    # setproctitle also names the thread (/proc/<pid>/comm, 15 bytes), which `top` and `ps -o comm` show.
    _libc().prctl(PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)


def kill_itself_when_parent_died(sig=9):
    """sgl_jax/srt/utils/common_utils.py kill_itself_when_parent_died: prctl(PR_SET_PDEATHSIG, SIGKILL)."""
    _libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
