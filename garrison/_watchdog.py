"""The blocked-event-loop watchdog: says, on the ``garrison.node`` logger, when code in
a node's trio thread blocks it (``time.sleep``, a blocking ``requests.get`` inside an
``async def``), and where.

A node runs every process, workflow, timer and (in a cluster) its lease renewal in one
trio thread: a call that blocks that thread freezes all of them, and without this
nothing said so. Each trio run holding open nodes has one plain thread (not a daemon:
started as its first node opens, or the next after it died; stopped and joined as its
last one closes). Every :data:`INTERVAL` it posts a tiny callback with the run's
``TrioToken.run_sync_soon`` (one outstanding at a time) and measures, in real monotonic
time, how long that callback has waited to run. Past :data:`THRESHOLD` it logs one
warning with the trio thread's stack, trimmed to the user's frames; once the callback
ran, one line saying for how long the loop was blocked. It uses no trio timer: under a
``MockClock`` a periodic trio sleep would wake millions of times over a test's mock
month. Nothing runs on the node's hot paths: the only work in the trio thread is the
callback.

What runs there is told by the frames alone: the pid, workflow or activity of the
running task are in context variables, which another thread cannot read, and reading
another running thread's frame locals is not safe; the innermost frame of the user's
code names the function (a process's, an activity's) and its file and line, which is
what to fix.

Time the watchdog itself did not run is judged before it is blamed on the node (see
:meth:`Watchdog.tick`): when the whole process was paused (SIGSTOP, a VM paused or its
CPU stolen, a debugger holding every thread) the watchdog's own sleep overran as well
as the callback's wait, and nobody ran, so that time is not counted.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import trio

from ._frames import is_runtime, is_users

log = logging.getLogger("garrison.node")

#: seconds (real time) between two posts: also the precision of the blocked time said
INTERVAL = 0.5
#: seconds (real time) the trio thread may go without running a callback before a
#: warning. A healthy node runs one within milliseconds, and the usual one-off stalls
#: (a garbage collection of a large heap, a lazy import, a slow disk's fsync) stay well
#: under a second, so 3 s is no false alarm; and it is said well before the default
#: cluster lease (10 s, renewed every 3.3 s) lapses, so the log explains the lapse.
THRESHOLD = 3.0
#: seconds the watchdog's own sleep may overrun before it asks whether the process ran
#: meanwhile (a busy host delays a thread's wake-up by a little, not by this much)
SLACK = 1.0
#: below this share of CPU time (all the process's threads) over the watchdog's
#: oversleep, the process is taken for paused: a paused one uses none at all, while a
#: call holding the GIL uses a whole CPU, or a good part of one on a busy host whose
#: other work steals it (12 s held took 5 s of CPU on a shared 2-vCPU VM)
PAUSED_CPU = 0.1
#: the innermost frames shown in the warning
FRAMES = 8

class Watchdog:
    """Watches one trio run's thread (``ident``) through ``post`` (its token's
    ``run_sync_soon``). ``clock``, ``cpu_clock`` (the process's CPU time) and ``wait``
    (sleep ``seconds`` unless stopped: ``True`` once stopped) are injectable for tests,
    which call :meth:`tick` themselves."""

    def __init__(self, post: Callable[[Callable[[], None]], None], ident: int, *,
                 interval: float | None = None, threshold: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time,
                 wait: Callable[[float], bool] | None = None,
                 frames: Callable[[], dict[int, Any]] = sys._current_frames) -> None:
        self._post = post
        self._ident = ident
        self._interval = INTERVAL if interval is None else interval
        self._threshold = THRESHOLD if threshold is None else threshold
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._stopping = threading.Event()
        self._wait = wait if wait is not None else self._stopping.wait
        self._frames = frames
        #: the names of the nodes open in the run (what the lines name; replaced whole,
        #: never changed in place, as the watchdog's thread reads it)
        self.names: tuple[str, ...] = ()
        self._thread: threading.Thread | None = None
        self._last = clock()
        self._last_cpu = cpu_clock()
        #: seconds counted since the start: real time, less what the whole process did
        #: not run (see :meth:`tick`)
        self._counted = 0.0
        #: a posted callback has not run yet (set here, cleared by the trio thread)
        self._pending = False
        #: :attr:`_counted` when it was posted
        self._posted = 0.0
        #: the warning for the pending callback was logged (the line after is due)
        self._warned = False
        #: its thread ended on a fault of its own
        self._failed = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="garrison-watchdog")
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (it wakes at once)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        """Its thread runs (or is about to): not ended by a fault of its own, nor by
        its trio run's end."""
        return self._thread is not None and self._thread.is_alive() and not self._failed

    def _run(self) -> None:
        try:
            while not self._wait(self._interval):
                if not self.tick():
                    return
            self.tick(closing=True)
        except Exception:  # (a fault of its own: said, not a thread dying in silence)
            self._failed = True  # (the next node of the run to open starts another)
            _say(logging.ERROR, f"the watchdog of {self._named()} stopped: the node "
                 "runs on unwatched", exc_info=sys.exc_info())

    def _ran(self) -> None:  # (in the trio thread: the only work done there)
        self._pending = False

    def tick(self, *, closing: bool = False) -> bool:
        """One look (each :data:`INTERVAL`): ``False`` once the trio run has ended.
        ``closing``: the last, as the last node closes (in the trio thread, which then
        runs: the line after a warning is due, the callback's run or not)."""
        now, cpu = self._clock(), self._cpu_clock()
        elapsed, used = now - self._last, cpu - self._last_cpu
        self._last, self._last_cpu = now, cpu
        late = elapsed - self._interval
        held = False
        if late > SLACK:
            if used < late * PAUSED_CPU:
                # The watchdog overslept and the process (all its threads) used next to
                # no CPU meanwhile: the whole process was paused or not scheduled (SIGSTOP,
                # a VM paused or its CPU stolen, a debugger holding every thread).
                # Nobody ran, so the trio thread is not blamed for that time: it counts
                # as one interval.
                elapsed = self._interval
            else:  # the process ran, but not this thread: a call held the GIL
                held = True
        self._counted += elapsed
        blocked = self._counted - self._posted
        if self._pending and not closing:
            if blocked >= self._threshold and not self._warned:
                self._warned = True
                self._warn(blocked, held, over=False)
            return True
        if self._warned:
            self._warned = False
            _say(logging.WARNING, f"the event loop of {self._named()} ran again after "
                 f"{blocked:.1f} s blocked", extra={"blocked_for": round(blocked, 1)})
        elif held and elapsed >= self._threshold:
            self._warn(elapsed, held, over=True)
        if closing:
            return False
        self._pending = True
        self._posted = self._counted
        try:
            self._post(self._ran)
        except trio.RunFinishedError:  # (a node closed from another context)
            return False
        return True

    def _named(self) -> str:
        names = list(dict.fromkeys(self.names))  # (nodes of one run may share a name)
        return ("node " if len(names) == 1 else "nodes ") + \
            ", ".join(repr(name) for name in names)

    def _warn(self, blocked: float, held: bool, *, over: bool) -> None:
        """The one warning of a blockage: what blocks the loop (its frames, while it
        does), and what to do."""
        stack, entry = ([], None) if over else self._stack()
        # the innermost frame of the user's code; an app installed as a package has
        # none outside the libraries: the function garrison called (the process's, the
        # activity's), not the standard library's socket read it is in
        mine = next((f for f in reversed(stack) if is_users(f.filename)), None) or \
            entry or (stack[-1] if stack else None)
        extra: dict[str, Any] = {"blocked_for": round(blocked, 1)}
        if held:
            what = ("; nor did any other thread of the process: a call held the GIL (a "
                    "C extension's, or a builtin's such as sorted() or re on big data), "
                    "in the node's thread or another")
        else:
            what = ": code in its thread blocks it"
        if mine is not None:
            what += f", at {mine.filename}:{mine.lineno} in {mine.name}"
            extra["blocked_at"] = f"{mine.filename}:{mine.lineno}"
            extra["blocked_in"] = mine.name
        message = (f"the event loop of {self._named()} "
                   f"{'did not run for' if over else 'has not run for'} {blocked:.1f} s"
                   f"{what} (no process, workflow, timer or lease renewal of the node "
                   "runs meanwhile); move blocking calls out of async code: a plain def "
                   "activity runs in a worker thread, or await "
                   "trio.to_thread.run_sync(fn, ...)")
        sinfo = None
        if stack:
            left_out = " (trio's and garrison's frames left out)" if not any(
                is_runtime(f.filename) for f in stack) else ""
            sinfo = (f"The node's thread, innermost last{left_out}:\n"
                     + "".join(traceback.format_list(stack)).rstrip("\n"))
        _say(logging.WARNING, message, extra=extra, sinfo=sinfo)

    def _stack(self) -> tuple[list[traceback.FrameSummary], traceback.FrameSummary | None]:
        """The trio thread's frames now, innermost last, at most :data:`FRAMES`: those
        trio and garrison run, from trio's outermost inward (the user's code, and what
        it called: a library's socket read); with none, trio's and garrison's own (its
        own code blocks). And the outermost of those trio and garrison run (``None``
        if none): the function they called."""
        frame = self._frames().get(self._ident)
        if frame is None:
            return [], None
        stack = list(traceback.extract_stack(frame))
        runtime = [is_runtime(f.filename) for f in stack]
        if True in runtime:  # (what called trio.run is left out too)
            stack, runtime = stack[runtime.index(True):], runtime[runtime.index(True):]
        outside = [f for f, own in zip(stack, runtime, strict=True) if not own]
        return (outside or stack)[-FRAMES:], (outside[0] if outside else None)


def _say(level: int, message: str, *, extra: dict[str, Any] | None = None,
         sinfo: str | None = None, exc_info: Any = None) -> None:
    """Log ``message`` on ``garrison.node`` from the watchdog's thread, where nothing
    raising may end it: a handler's or filter's exception (logging passes on what a
    handler's ``emit`` raises unless the handler catches it) is written to stderr with
    the line, as logging's own ``Handler.handleError`` does, and the watchdog goes on."""
    caller = sys._getframe(1)
    try:
        if log.isEnabledFor(level):
            log.handle(log.makeRecord(log.name, level, __file__, caller.f_lineno,
                                      message, (), exc_info, func=caller.f_code.co_name,
                                      extra=extra, sinfo=sinfo))
    except Exception:
        try:
            said = "".join(traceback.format_exception(*exc_info)) if exc_info else ""
            sys.stderr.write("--- garrison's watchdog: logging raised on its line ---\n"
                             f"{traceback.format_exc()}Line: {message}\n"
                             f"{sinfo + chr(10) if sinfo else ''}{said}")
        except Exception:  # (no stderr, or a closed one: nowhere left to say it)
            pass


#: the environment variable that sets the threshold (seconds; ``0``: no watchdog)
THRESHOLD_VARIABLE = "GARRISON_WATCHDOG_SECONDS"


def _threshold() -> float:
    """The seconds before a warning: ``$GARRISON_WATCHDOG_SECONDS`` if set (``0``
    turns the watchdog off), else :data:`THRESHOLD`; a value that is no number of
    seconds is said, and the default holds."""
    text = os.environ.get(THRESHOLD_VARIABLE)
    if text is None:
        return THRESHOLD
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:  # (nan too)
        log.warning("%s=%r is no number of seconds (0 or more): the watchdog warns after "
                    "%g s", THRESHOLD_VARIABLE, text, THRESHOLD)
        return THRESHOLD
    return value


#: the watchdogs of the trio runs holding open nodes (by the run's token)
_watching: dict[Any, Watchdog] = {}
_lock = threading.Lock()


def watch(token: trio.lowlevel.TrioToken, ident: int, name: str) -> Callable[[], None]:
    """Watch the run of ``token`` (thread ``ident``) while node ``name`` is open in it
    (the first node of the run starts the thread); call what it returns as the node
    closes (the last node of the run stops and joins the thread)."""
    with _lock:
        dog = _watching.get(token)
        if dog is None or not dog.alive:  # (one that died watches the open nodes too)
            threshold = _threshold()
            if threshold == 0:  # (turned off)
                return lambda: None
            new = Watchdog(token.run_sync_soon, ident, threshold=threshold)
            new.names = dog.names if dog is not None else ()
            try:
                new.start()
            except RuntimeError as exc:  # ("can't start new thread": the node runs on)
                log.warning("node %r runs unwatched: its watchdog thread did not start "
                            "(%s); a blocked event loop will not be said", name, exc)
                return lambda: None
            dog = _watching[token] = new
        dog.names += (name,)

    def closed() -> None:
        with _lock:
            dog = _watching.get(token)  # (not the one it opened under if that died)
            if dog is None or name not in dog.names:  # (nothing of it to stop)
                return
            names = list(dog.names)
            names.remove(name)
            last = not names
            if last:  # (its name stays for the watchdog's last line)
                del _watching[token]
            else:
                dog.names = tuple(names)
        if last:
            dog.stop()

    return closed
