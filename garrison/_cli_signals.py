"""SIGINT/SIGTERM that reach the ``garrison`` command before it listens for them.

``garrison run`` stops gracefully on its first SIGINT or SIGTERM (exit 0), also one
that comes while its node starts. But the command listens for signals only once trio
runs, and importing garrison (trio, the stores, the application) takes a few tenths of
a second before that: a Ctrl-C in that time was a ``KeyboardInterrupt`` traceback out
of whatever module was being imported (a SIGTERM killed the process).

So when this process *is* the ``garrison`` command (``garrison ...`` or ``python -m
garrison ...``; never when an application imports garrison), importing this module
(the package imports it before anything else) installs handlers that only note the
signal (:func:`defer_if_command`); a second one exits at once (``128 + the signal
number``, as a second signal does once the node runs). The command then hands a
noted signal on: ``garrison run`` and ``garrison ui`` raise it again once they listen
(:func:`raise_noted`), so it is their first signal, whatever the moment it came, and put the
usual handlers back (:func:`restore`) once they stop listening (their signal receiver,
as it closes, puts back the noting ones it found); any other command puts the usual
handlers back at once and gets it as it would have.

Only the standard library here: it runs before anything else of garrison is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

__all__ = ["defer_if_command", "raise_noted", "restore"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the signal noted, if one came; ``_deferring``: the noting handlers were installed
#: (once, as this module was imported; :func:`restore` replaces them where they still are)
_noted: list[int] = []
_deferring = False


def _is_command() -> bool:
    """Whether this process runs the ``garrison`` command (its console script, or
    ``python -m garrison``), not an application that imports garrison. The console
    script must be what the interpreter was started with (``sys.orig_argv``): a
    ``multiprocessing`` child started the ``spawn`` way is given its parent's
    ``sys.argv`` (``.../garrison``) before it imports the application, and garrison."""
    argv = list(getattr(sys, "orig_argv", []))
    if os.path.basename(sys.argv[0]) in ("garrison", "garrison.exe"):
        return sys.argv[0] in argv[1:]
    return any(arg == "-m" and argv[i + 1:i + 2] == ["garrison"]
               for i, arg in enumerate(argv))


def _note(signum: int, _frame: FrameType | None) -> None:
    if _noted:  # a second signal before the command listened: stop at once
        os._exit(128 + signum)
    _noted.append(signum)


def defer_if_command() -> None:
    """When this process is the ``garrison`` command, note SIGINT/SIGTERM from now on
    instead of acting on them (see the module docs); else do nothing."""
    global _deferring
    if _deferring or not _is_command():
        return
    try:
        for signum in _SIGNALS:
            signal.signal(signum, _note)
    except ValueError:  # not the main thread: nothing to defer
        return
    _deferring = True


def raise_noted() -> None:
    """Raise again the signal noted so far, if one was (it is forgotten here): the
    caller listens for signals by now, or has put the usual handlers back."""
    if _noted:
        signal.raise_signal(_noted.pop())


def restore() -> None:
    """Put the usual handlers back (``KeyboardInterrupt`` for SIGINT, the default
    for SIGTERM) where the noting ones still are (a handler the application installed
    meanwhile stays) and deliver a signal noted meanwhile to them: a command that does not
    stop by its own handler gets it as it would have.

    It may run more than once (``garrison.run`` in a worker thread of an application
    the command runs, then the command once its node stopped: a signal receiver puts
    the noting handlers back as it closes); it does nothing off the main thread (the
    handlers are the main thread's)."""
    if not _deferring or threading.current_thread() is not threading.main_thread():
        return
    for signum, usual in ((signal.SIGINT, signal.default_int_handler),
                          (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(signum) is _note:  # (not one the application put in place)
            signal.signal(signum, usual)
    raise_noted()


defer_if_command()
