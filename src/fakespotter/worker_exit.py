"""Worker processes end with the process that started them.

A pool worker waits on a queue that it holds both ends of, so a driver killed with SIGKILL
(or by the out-of-memory killer) used to leave its workers running, each holding a model
(issue #27: about 1 GB, still running 82 s later). :func:`die_with_parent`, called first in
every worker's initializer, ends the worker when its parent goes:

- on Linux, the kernel sends it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
  even while it is busy in C code; this is only asked for when the parent started it from
  its main thread, because the signal follows the thread that started the worker, not the
  process;
- everywhere, a daemon thread waits on multiprocessing's parent sentinel (a pipe that the
  parent alone holds open on POSIX, the parent's process handle on Windows) and exits the
  worker when it closes.
"""

from __future__ import annotations

import os
import sys
import threading


def die_with_parent(parent_pid: int, parent_on_main_thread: bool) -> None:
    """End this worker process when the process ``parent_pid`` ends. Call it first in a
    pool worker's initializer; ``parent_on_main_thread``: the pool was made on the parent's
    main thread (``on_main_thread()`` there)."""
    if parent_on_main_thread and sys.platform.startswith("linux"):
        _kill_me_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the signal was asked for
        os._exit(1)
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_when_gone, args=(parent,), name="fakespotter-parent-watch", daemon=True
        ).start()


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _kill_me_with_parent() -> None:
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # from <linux/prctl.h>
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (another libc): the thread still watches
        pass


def _exit_when_gone(parent) -> None:
    parent.join()  # returns when the parent's sentinel closes: the parent has ended
    os._exit(1)
