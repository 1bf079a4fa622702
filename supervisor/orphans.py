"""Children that die with their parent: `s2s up` killed with SIGKILL must not leave Redis or a worker behind.

On Linux, prctl(PR_SET_PDEATHSIG) asks the kernel to send the child SIGTERM when its parent dies; elsewhere
this does nothing (the supervisor's own shutdown still stops its children on SIGINT/SIGTERM).
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def terminate_with_parent() -> None:
    """preexec_fn for subprocess.Popen: SIGTERM this child when the parent process dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
