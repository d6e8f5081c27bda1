"""What the command-line programs share about their standard streams.

A closed stdout or stderr (``deblurd simulate ... | head -3``, ``deblurctl watch | head``)
ends a command quietly, as it ends ``git`` or ``ls``: no ``BrokenPipeError`` traceback, and
no "Exception ignored" line when the interpreter flushes its streams at exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

EX_PIPE = 128 + signal.SIGPIPE
"""Exit status after a closed pipe: what a shell reports for a program killed by SIGPIPE."""


def quiet_closed_pipe() -> int:
    """Point stdout and stderr at ``/dev/null`` (the final flush then cannot fail) and
    return :data:`EX_PIPE`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
    return EX_PIPE


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """``main(argv)``, ending quietly with :data:`EX_PIPE` on a closed stdout or stderr."""
    try:
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        return quiet_closed_pipe()
    return code
