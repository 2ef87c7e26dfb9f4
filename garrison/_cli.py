"""The ``garrison`` command line: ``run``, ``check``, ``workflows``, ``schedules``, ``ui``.

``garrison run TARGET`` where TARGET is
  * a YAML config: start its hosts and ``auto_start`` services and run until
    SIGINT/SIGTERM (or, with ``--main ENTRY``, until that entry's process ends);
  * a Python file or ``module:function``: run its async ``main`` (or the named
    function) as the root process, like ``garrison.run``, and exit when it returns.

Every target stops gracefully on the first SIGINT/SIGTERM (exit 0) and at once on
the second. A bad config or an unusable store exits 2 with one line per problem.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from . import _cli_signals, _observe
from ._bind import bind_problems
from ._cli_options import (
    Parser,
    escape_unencodable,
    escaped,
    guard_stderr,
    print_last_words,
    run_verb,
)
from ._duration import parse_lease
from ._errors import (
    ConfigError,
    NoSuchEntry,
    ProcessError,
    StoreError,
    StoreLocked,
    StoreVersionError,
    close_match,
    id_hint,
)
from ._targets import check_target, entry_refusal, exit_is_import_error, is_script, script_spec
from .actors._values import ErrorInfo

log = logging.getLogger("garrison.cli")


#: attributes every LogRecord has; anything else on a record came from ``extra=``
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}
#: where a traceback starts inside a message that carries one
_TRACEBACK = re.compile(r"\n(?=(?:  \+ Exception Group )?Traceback \(most recent call last\):)")


def split_traceback(message: str) -> tuple[str, str | None]:
    """``(message, traceback)`` of a log message with a traceback appended to it, as
    some records still make (the process host's exit log); ``(message, None)`` if it
    has none."""
    parts = _TRACEBACK.split(message, maxsplit=1)
    if len(parts) == 1:
        return message, None
    return parts[0], parts[1]


def _json_value(value: Any) -> Any:
    """A field value as JSON: numbers, booleans, strings and null as they are, lists and
    mappings element by element, anything else (``Pid``, ``ErrorInfo``) as its string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _traceback_of(record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
    """The record's traceback: its ``exc_info``, or a ``traceback=`` extra field."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    text = getattr(record, "traceback", None)
    return text.rstrip() if isinstance(text, str) and text else None


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, every
    ``extra=`` field with its JSON type (``attempt`` is a number; ``pid`` and ``error``
    are strings, ``error_type`` the error's type name), and any ``traceback`` in a
    field of its own, never inside ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        message, in_message = split_traceback(record.getMessage())
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in vars(record).items():
            if key in _RECORD_FIELDS or key.startswith("_") or key == "traceback":
                continue
            if key in out:  # (an extra= field named time, level, logger or message)
                key = f"extra_{key}"
            out[key] = _json_value(value)
            if isinstance(value, ErrorInfo):
                out[f"{key}_type"] = value.type
        traceback = _traceback_of(record, self) or in_message
        if traceback:
            out["traceback"] = traceback
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out)


class _TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message``, then the traceback of ``exc_info`` or of a
    ``traceback=`` extra field on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "traceback", None)
        if isinstance(extra, str) and extra and not record.exc_info:
            line += "\n" + extra.rstrip()
        return escaped(line)


def _json_logs() -> bool:
    """True if ``garrison``'s log lines are JSON (``--log-format json``)."""
    return any(isinstance(h.formatter, _JsonFormatter)
               for h in logging.getLogger("garrison").handlers)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """One readable line per event on stderr (``fmt="json"``: one JSON object per line)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(message)s",
                                            "%H:%M:%S"))
    root = logging.getLogger("garrison")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class _RanOnImport(Exception):
    """Importing the script ran ``garrison.run`` itself: the root is not run again."""


class _NoRoot(Exception):
    """``garrison run TARGET``: the target cannot be the root process (one line, exit 2)."""


def is_config(target: str) -> bool:
    """Whether ``garrison run TARGET`` names a YAML config: ``.yaml`` or ``.yml``, in any
    case (``UP.YAML``), as a file is told from a module everywhere; or any other file
    there is, without a ``:``, that is no script (``app.conf``): ``garrison check``
    reads any file as a config, as ``garrison run`` would, and a module is no file
    (``app.conf`` was imported as the module ``app``)."""
    if target.lower().endswith((".yaml", ".yml")):
        return True
    if ":" in target or is_script(target) or not os.path.isfile(target):
        return False
    # a file of no suffix beside a module of its name (a launcher script ``worker``
    # beside ``worker.py``): ``garrison run worker`` runs the module, as it always did
    return bool(Path(target).suffix) or not (os.path.isfile(target + ".py") or
                                             os.path.isfile(f"{target}/__init__.py"))


def _load_callable(target: str) -> Any:
    """``path/to/file.py`` (its ``main``), ``file.py:func`` or ``module:func``; an async
    callable, else :class:`_NoRoot` saying why."""
    from . import _node

    spec_path, _, func = target.partition(":") if not is_script(target) else (target, "", "")
    if not spec_path:
        raise _NoRoot("no TARGET: expected a config (app.yaml), a script (script.py) or "
                      "module:function")
    ran_before = len(_node.ran)
    try:
        with exit_is_import_error(spec_path):
            if is_script(spec_path):
                path = Path(spec_path)
                if not path.is_file():
                    raise _NoRoot(f"{spec_path!r} is a folder, not a script" if path.is_dir()
                                  else f"no such file {spec_path!r}")
                sys.path.insert(0, str(path.resolve().parent))
                module_name = path.stem
                spec = script_spec(module_name, path)
                assert spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                sys.path.insert(0, os.getcwd())
                module = importlib.import_module(spec_path)
    except _NoRoot:
        raise
    except (ImportError, SyntaxError) as exc:
        raise _NoRoot(f"cannot import {spec_path!r}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # the module's own code raised as it ran
        raise _NoRoot(f"cannot import {spec_path!r}: {type(exc).__name__}: {exc}"
                      f"{_raised_at(exc)}") from None
    name = func or "main"
    try:
        root = getattr(module, name)
    except AttributeError:
        raise _NoRoot(f"{target!r} has no function {name!r}"
                      f"{_functions_hint(module, name, spec_path)}") from None
    if any(getattr(fn, "func", fn) is root for fn in _node.ran[ran_before:]):
        # a script without the guard (``python script.py`` semantics): its import ran
        # this very target, or a functools.partial of it (a garrison.run of another
        # function at import is not it)
        raise _RanOnImport(
            f"{spec_path} calls garrison.run({name}) when it is imported (it has no 'if "
            "__name__ == \"__main__\":' guard), so it ran there, without this command's "
            f"options (--store, --ui, ...), and is not run again; put that call under the "
            "guard")
    try:
        check_target(root)
    except TypeError:
        raise _NoRoot(f"{target!r}: {name} is not an async function (async def); the root "
                      "process must be one") from None
    problem = _arguments_problem(root, repr(target))
    if problem is not None:
        raise _NoRoot(problem)
    return root


def _functions_hint(module: Any, name: str, spec_path: str) -> str:
    """What a script or module that has no function ``name`` has instead: the async
    function ``name`` is a typo of (`` (did you mean 'start'?)``), else the async
    functions it defines, in its order (imported ones are not its own), or ``""``."""
    import inspect

    own = [n for n, fn in vars(module).items()
           if not n.startswith("_") and inspect.iscoroutinefunction(fn)
           and getattr(fn, "__module__", None) == module.__name__]
    guess = close_match(name, own)
    if guess is not None:
        return f" (did you mean {guess!r}?)"
    if not own:
        return ""
    return f"; its async functions are {', '.join(own)} (name one: {spec_path}:{own[0]})"


def _arguments_problem(fn: Any, shown: str) -> str | None:
    """Why ``fn`` cannot be the root process, which is called with no arguments: the
    ones it requires; ``None`` when it takes none (or has no signature to read)."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind()
    except TypeError as exc:
        return (f"{shown} cannot be the root process: the root is called with no "
                f"arguments, and {getattr(fn, '__name__', shown)}{signature} requires some "
                f"({exc}); give it defaults, or run a process.service entry with an "
                "input")
    return None


def _raised_at(exc: BaseException) -> str:
    """`` (raised at FILE:LINE)``: where ``exc`` was raised, or ``""``. That is the
    innermost frame of its traceback that is the user's code (none of Python's own
    library, an installed package's or garrison's), then, when something else raised
    below it, that frame too: ``(raised at job.py:2, in .../json/decoder.py:353)``
    (a bare library line does not say which line of the user's file failed)."""
    import sysconfig
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    paths = sysconfig.get_paths()
    libraries = {os.path.realpath(paths[key]) + os.sep
                 for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    libraries.add(str(Path(__file__).resolve().parent) + os.sep)  # garrison's own

    def users(filename: str) -> bool:
        if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            return False
        return not os.path.realpath(filename).startswith(tuple(libraries))

    inner = frames[-1]
    mine = next((f for f in reversed(frames) if users(f.filename)), inner)
    below = "" if mine is inner else f", in {inner.filename}:{inner.lineno}"
    return f" (raised at {mine.filename}:{mine.lineno}{below})"


async def _serve(config: Any, root: Any, label: str | None, store: str | None,
                 ui: str | None = None, token: str | None = None,
                 metrics: str | None = None, name: str | None = None,
                 lease: str = "10s", forwarded_allow_ips: str | None = None,
                 sessions: dict[str, Any] | None = None) -> int:
    """Run a node until ``root`` (a callable or an entry id; ``None``: nothing) ends or
    SIGINT/SIGTERM arrives. The first signal stops the node gracefully (services in
    reverse dependency order, processes leaves first, workflows parked where they
    are); a second one exits at once. ``ui``: serve the web console, attached to the
    node, on that address while it runs (``sessions``: its ``session_idle`` and
    ``session_max_age``, when given); ``metrics``: serve Prometheus metrics there. A
    node of a cluster drains on SIGTERM first (its workflows move to the other nodes at
    their next durable point), then stops."""
    from ._node import new_node, running_node

    if metrics is not None:  # time what the node does from its start on
        _observe.set_timing(True)
    code = 0
    running = trio.CancelScope()
    opened: list[Any] = []  # the node, once it runs
    starting: list[Any] = []  # the node, while it starts
    printed: list[str] = []  # the root's result: the last line, once the node stopped
    gave_up: list[BaseException] = []  # the error of a clustered node's store that gave up
    # listen before the node starts, so a signal during start-up is not fatal
    with _listening() as signals:
        async with trio.open_nursery() as watchers:

            async def watch_signals() -> None:
                # (the first signal only: a second exits from its handler, see
                # _force_on_the_second)
                async for signum in signals:
                    signame = signal.Signals(signum).name
                    if signum == signal.SIGTERM and opened and opened[0].clustered:
                        log.info("received %s: draining (its workflows move to the other "
                                 "nodes), then shutting down (again to force)", signame)
                        opened[0].drain()  # exit_when_drained ends the run
                    else:
                        log.info("received %s: shutting down (again to force)", signame)
                        running.cancel()  # the node then stops gracefully
                        if starting and not opened:  # its start ends now, then it stops
                            starting[0].interrupt_start()

            watchers.start_soon(watch_signals)
            starting.append(new_node(config=config, store=store, name=name, lease=lease))
            # (servers: the console's and the metrics server, ended once the node stopped)
            async with _until_stopped() as servers, running_node(starting[0]) as node, \
                    trio.open_nursery() as console:
                opened.append(node)
                if node.clustered:
                    console.start_soon(exit_when_drained, node, running)
                    console.start_soon(exit_when_store_gave_up, node, running, gave_up)
                with running:
                    # a signal while the node started: it stops now (no console, no
                    # banner, no root), as after a signal once it ran
                    await trio.lowlevel.checkpoint_if_cancelled()
                    if ui is not None:
                        from .console import serve_console

                        where = await servers.start(partial(
                            serve_console, node=node, bind=ui, token=token,
                            forwarded_allow_ips=forwarded_allow_ips, **(sessions or {})))
                        announce_console(where, "garrison run", sys.stderr)
                    if metrics is not None:
                        from .metrics import serve as serve_metrics

                        served = await servers.start(serve_metrics, node, metrics)
                        _say_address("garrison run", f"metrics at {served.url}",
                                     sys.stderr, url=served.url)
                    if root is None:  # nothing ends the run: say that it runs, and what
                        log.info("%s", _started_line(node, where.url if ui is not None
                                                     else None))
                        await trio.sleep_forever()
                    if isinstance(root, str) and root in {s.id for s in node.services()}:
                        code, result = await _until_service_ends(node, root)
                        if result is not None:
                            printed.extend(_shown(result, label))
                    elif isinstance(root, str) and \
                            node.config.entries[root].kind == "workflow.py":
                        code, result = await _until_workflow_ends(node, root)
                        if result is not None:
                            printed.extend(_shown(result, label))
                    else:
                        pid = await node.spawn(root)
                        try:
                            result = await node.wait(pid)
                            if result is not None:
                                printed.extend(_shown(result, label))
                        except ProcessError as exc:
                            _say_down_services(node, exc.error)
                            _run_failed(f"{label} failed", exc.error)
                            code = 1
                console.cancel_scope.cancel()
            watchers.cancel_scope.cancel()
    if gave_up:
        code = 1
    # after the node's shutdown logs: the run's last word
    return print_last_words("run", printed) or code


@contextlib.asynccontextmanager
async def _until_stopped() -> AsyncIterator[trio.Nursery]:
    """A nursery for ``garrison run``'s console and metrics server, entered before the
    node and cancelled once the block ends (the node has stopped): they answer through
    the node's stop, which a process's cleanup can make long, ``503`` from its start
    (``node.stopped``), as served from a nursery of one's own; cancelled before it,
    they refused every connection for the whole stop."""
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def _shown(result: Any, label: str | None) -> list[str]:
    """``[str(result)]``, the run's last line; a result whose ``__str__`` raises is said
    on stderr instead, and none is printed (the run did not fail: its result cannot be
    shown)."""
    try:
        return [str(result)]
    except Exception as exc:
        print(f"garrison run: the result of {label} cannot be shown: str() of its "
              f"{type(result).__name__} raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return []


@contextlib.contextmanager
def _listening() -> Iterator[Any]:
    """Receive SIGINT/SIGTERM (the receiver, for ``async for``) while in the block.

    One that came before this command listened (as garrison was imported, the config
    loaded: see ``_cli_signals``) comes again as it starts to: its first signal, acted
    on as any. Once the block ends the usual handlers are back (the receiver puts back
    the ones it found, the noting ones of ``_cli_signals``: a SIGTERM after the node
    stopped, the process waiting for a thread of the application to end, was noted and
    the process ran on)."""
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            _force_on_the_second()
            _cli_signals.raise_noted()
            yield signals
    finally:
        _cli_signals.restore()


def _force_on_the_second() -> None:
    """Wrap the receiver's handlers: the second SIGINT/SIGTERM exits at once from the
    handler itself, which runs even while the node's thread waits in a call that does
    not return to the event loop (a read from a server that stopped answering), where
    the receiver's task would never see it."""
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        inner = signal.getsignal(signum)

        def handler(got: int, frame: Any, inner: Any = inner) -> None:
            received.append(got)
            if len(received) > 1:
                log.warning("received %s again: forcing an immediate stop",
                            signal.Signals(got).name)
                logging.shutdown()
                os._exit(128 + got)
            if callable(inner):
                inner(got, frame)

        signal.signal(signum, handler)


def _started_line(node: Any, console_url: str | None) -> str:
    """What ``garrison run app.yaml`` without ``--main`` says once its node runs (it
    printed nothing, and looked hung): the node, its stores, its running services and
    schedules, the console's address, and how to stop it."""
    from .supervision import ServiceStatus

    stores = []
    for name, host in node.hosts.items():
        store = getattr(host, "store", None)
        if store is not None:
            stores.append(f"{name} on {store.path or 'an in-memory store'}")
    singletons = set()
    if node.clustered and node.config is not None:  # (each runs on one node: held or not)
        singletons = {entry.id for entry in node.config.entries.values()
                      if getattr(getattr(entry, "lifecycle", None), "singleton", False)}
    services = [s.id for s in node.services() if s.id not in singletons
                and s.status not in (ServiceStatus.STOPPED, ServiceStatus.COMPLETED)]
    services += [f"{sid} (singleton: one node of the cluster runs it)"
                 for sid in sorted(singletons)]
    schedules = []
    for name, host in node.hosts.items():
        if getattr(host, "store", None) is not None:
            try:
                schedules += [r.schedule_id for r in node.schedules(name) if not r.paused]
            except Exception:  # (a store out of reach: the line is not worth failing for)
                pass
    parts = [f"node {node.name} running", "workflows: " + (", ".join(stores) or "none"),
             "services: " + (", ".join(services) or "none"),
             "schedules: " + (", ".join(schedules) or "none")]
    if console_url is not None:
        parts.append(f"console: {console_url}")
    return "; ".join(parts) + ". Ctrl-C to stop"


def _say_down_services(node: Any, error: Any) -> None:
    """Before the last line of a root that failed: a line for each service of the
    config that is down after a failure (between restarts, or gave up), ``garrison run:
    service app:db is between restarts: its process failed with ...``, the likely cause
    of a root that failed on a name such a service registers. One the root's ``error``
    names already (a ``NoSuchProcess`` of the service's id says why) is not said again."""
    from ._node import service_manager
    from .supervision import ServiceStatus

    services = service_manager(node)
    if services is None:
        return
    said = str(error)
    for info in node.services():
        if info.status not in (ServiceStatus.BACKOFF, ServiceStatus.GAVE_UP):
            continue
        why = services.why_down(info.id)
        # (the root's error said it as of then: its time left to the restart is less now)
        then = services.why_down(info.id, due=False)
        if why is None or then is None or then in said:
            continue
        if _json_logs():
            log.error("%s", why, extra={"service": info.id, "error": info.last_error})
        else:
            print(escaped(f"garrison run: {why}"), file=sys.stderr)


def _run_failed(what: str, error: Any) -> None:
    """``garrison run``'s own last line when its root failed: ``garrison run: WHAT:
    ERROR`` on stderr, or a JSON log line with the error's fields under
    ``--log-format json`` (stderr is then one JSON object per line)."""
    if _json_logs():
        log.error("%s: %s", what, error, extra={"error": error})
    else:
        print(escaped(f"garrison run: {what}: {error}"), file=sys.stderr)


async def _until_workflow_ends(node: Any, entry_id: str) -> tuple[int, Any]:
    """``--main`` naming a ``workflow.py`` entry: a new durable workflow of it on the
    node's default workflow host (a fresh id each run); the exit code once it has
    ended, with its result: 0 once it completed, 1 once it failed or was cancelled."""
    from ._errors import GarrisonError

    pid = await node.start_workflow(entry_id)
    try:
        return 0, await node.workflow(pid.id, host=pid.host).result()
    except GarrisonError as exc:  # WorkflowFailed, WorkflowCancelled, a divergence
        error = getattr(exc, "error", None) or exc
        _say_down_services(node, error)
        _run_failed(f"{entry_id} failed", error)
        return 1, None


async def _until_service_ends(node: Any, service_id: str) -> tuple[int, Any]:
    """``--main`` naming a ``process.service``: the service the node runs (started now
    if it is not ``auto_start``), not a copy of its process without its input; the
    exit code once it has ended for good, with what it returned: 0 once it returned
    normally (``completed``), 1 once its restarts, or those of a service it requires,
    gave up (whether it waits for that one or runs on without it)."""
    from .supervision import ServiceStatus

    needs: list[str] = []  # what it requires, and what those require
    todo = [service_id]
    while todo:
        for dep in node.config.entries[todo.pop()].requires:
            if dep not in needs and dep != service_id:
                needs.append(dep)
                todo.append(dep)
    if not node.config.entries[service_id].lifecycle.auto_start:
        # (one the node started may have run and returned already: not run twice)
        await node.start_service(service_id)
    while True:
        status = {s.id: s for s in node.services()}
        info = status[service_id]
        if info.status == ServiceStatus.COMPLETED:
            return 0, info.result
        if info.status == ServiceStatus.GAVE_UP:
            _run_failed(f"{service_id} gave up", info.last_error)
            return 1, None
        for dep in needs:
            # a service it requires will never run again: it waits for it for ever, or
            # runs on without it (a requirement that gives up stops alone)
            what = info.status.without_requirement()
            if status[dep].status == ServiceStatus.GAVE_UP:
                _run_failed(f"{service_id} {what}: {dep}, which it requires, gave up",
                            status[dep].last_error)
                return 1, None
            if status[dep].status == ServiceStatus.COMPLETED and what == "cannot start":
                _run_failed(f"{service_id} {what}: {dep}, which it requires, returned",
                            "a service that returns is not restarted")
                return 1, None
        await trio.sleep(0.05)


async def exit_when_drained(node: Any, running: trio.CancelScope) -> None:
    """End ``garrison run`` (exit 0) once its clustered node has drained, whoever asked
    for the drain: SIGTERM, ``garrison nodes drain NAME``, or ``node.drain()``."""
    from ._node import released_to

    await node.drained()
    others = released_to(node)
    if others:
        log.info("node %s drained: its workflows are left to the other live nodes (%s); "
                 "shutting down", node.name, ", ".join(others))
    elif others is None:  # (its lease lapsed as it drained: who is live is not known)
        log.info("node %s drained: its workflows are left in the store for the other "
                 "nodes of its cluster to claim (the next node that joins, if none is "
                 "live); shutting down", node.name)
    else:
        log.info("node %s drained: no other node of its cluster is live to take them, "
                 "so its workflows wait in the store for the next node that joins; "
                 "shutting down", node.name)
    running.cancel()


async def exit_when_store_gave_up(node: Any, running: trio.CancelScope,
                                  gave_up: list[BaseException]) -> None:
    """End ``garrison run`` (exit 1) once its clustered node left the cluster because
    its store gave up writing (past ``retry_for``, a server that lost confirmed commits,
    a schema migrated past this release): the other nodes took its workflows, and a node
    that ran on would only serve its processes without recording a workflow. Exiting
    lets whatever runs it (systemd, Kubernetes) start it again: it joins anew."""
    from ._node import store_gave_up

    error = await store_gave_up(node)
    gave_up.append(error)
    _run_failed(f"node {node.name} left the cluster: its store gave up; shutting down "
                "(start it again to join anew)", error)
    running.cancel()


def announce_console(where: Any, who: str, out: Any = None) -> None:
    """Print where the console answers (and its one-time login link) on ``out``
    (stdout by default: ``garrison ui``'s output; ``garrison run`` says it on stderr,
    its standard output being the root's result)."""
    _say_address(who, f"web console at {where.url}", out, url=where.url)
    if where.login_url:
        _say_address(who, f"open {where.login_url} (a one-time login link), or log in at "
                     f"{where.url}login with the token", out, url=where.url,
                     login_url=where.login_url)


def _say_address(who: str, what: str, out: Any, **fields: str) -> None:
    """Say where a server of the command answers: ``WHO: WHAT`` on ``out``, or, on
    stderr under ``--log-format json``, a JSON log line of ``garrison.cli`` with
    ``fields`` (stderr is then one JSON object per line). Said whatever
    ``--log-level`` is, as the plain line is: a port 0's address is known only so."""
    if out is sys.stderr and _json_logs():
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (what,), None,
                                extra=fields)
        for handler in logging.getLogger("garrison").handlers:
            handler.handle(record)
        return
    print(f"{who}: {what}", file=out, flush=True)


def _sessions(args: argparse.Namespace) -> dict[str, Any]:
    """The console's session expiry options given (``--session-idle``,
    ``--session-max-age``) as ``serve_console`` arguments."""
    return {name: value for name in ("session_idle", "session_max_age")
            if (value := getattr(args, name, None)) is not None}


def _console_problem(bind: str | None, token: str | None, option: str,
                     forwarded_allow_ips: str | None, sessions: dict[str, Any],
                     binds: list[tuple[str, str, int, str]]) -> str | None:
    """Why the console cannot be served on ``bind`` (given as ``option``), or ``None``;
    checked before anything starts. Its address joins ``binds`` (for
    :func:`bind_problems`, once every address is known)."""
    if bind is None:
        if forwarded_allow_ips is not None:
            return "--forwarded-allow-ips is an option of the console (--ui)"
        if sessions:
            return (f"--{next(iter(sessions)).replace('_', '-')} is an option of the "
                    "console (--ui)")
        return None
    try:
        import hypercorn.trio  # noqa: F401  (what serves it: imported only then)

        from .console import check_bind
    except ImportError as exc:
        return (f"the web console needs the ui extra: pip install 'garrison[ui]' (in a "
                f"source checkout: pip install -e '.[ui]') ({exc.name} is missing)")
    try:
        host, port, _loopback = check_bind(bind, token, forwarded_allow_ips, cli=True)
    except ValueError as exc:
        return str(exc).replace("--bind", option, 1)
    binds.append((f"the console on {bind}", host, port, "hypercorn"))
    if sessions:
        from .console import check_sessions

        try:
            check_sessions(sessions.get("session_idle", "1h"),
                           sessions.get("session_max_age", "12h"), cli=True)
        except ValueError as exc:
            return str(exc)
    return None


def _metrics_problem(bind: str | None, binds: list[tuple[str, str, int, str]]
                     ) -> str | None:
    """Why ``--metrics`` cannot be served on ``bind``, or ``None``; checked before
    anything starts. Its address joins ``binds``."""
    if bind is None:
        return None
    from .metrics import parse_bind

    try:
        host, port = parse_bind(bind, "--metrics")
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        return (f"--metrics needs the metrics extra: pip install 'garrison[metrics]' "
                f"({exc.name} is missing)")
    except ValueError as exc:
        return str(exc)
    binds.append((f"metrics on {bind}", host, port, "trio"))
    return None


def _unwrapped(fn: Callable[..., Any], *args: Any) -> Any:
    """``trio.run(fn, *args)``, raising a lone exception that nurseries wrapped as itself."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _store_problem(store: str | None, config: Any) -> str | None:
    """Why ``--store`` cannot be opened (checked like a ``workflow.host`` store), or None."""
    if store is None:
        return None
    from .config._loader import store_key, store_path

    try:
        key = store_key(store_path(store, Path.cwd()))
    except ValueError as exc:
        return f"--store: {exc}"
    shown = str(key) if isinstance(key, Path) else store
    hosts = [e for e in (config.hosts() if config is not None else ())
             if getattr(e, "kind", "") == "workflow.host"]
    if len(hosts) == 1:  # its one workflow host's store is the one --store replaces
        return None
    for entry in hosts:
        if getattr(entry, "store", None) and store_key(entry.store) == key:
            return (f"--store: expected a store of its own, but {shown!r} is also the "
                    f"store of workflow.host entry {entry.id!r}")
    return None


def _main_problem(main: str | None, config: Any, target: str) -> str | None:
    """Why ``--main`` cannot be run (checked before anything starts), or ``None``: it
    names a runnable entry of the config (a ``process.py`` / ``workflow.py`` entry or a
    ``process.service``)."""
    if main is None:
        return None
    if config is None:
        return (f"--main {main!r}: --main picks the entry of a config to run; "
                f"{target!r} is not a config (a script runs its main, or script.py:func)")
    try:
        root = config.resolve_target(main)
    except KeyError as exc:
        module, _, func = main.partition(":")
        if func and not is_script(module) and \
                module not in {i.split(":", 1)[0] for i in config.entries}:
            clash = _module_clash(module, config)
            if clash is not None:
                return f"--main {main!r}: {clash}"
        try:
            if _main_function(main, quiet=False) is not None:
                return None  # a module:function (see _main_function)
            failed = ""
        except _NoRoot as no:
            failed = str(no)
        runnable = _runnable(config)
        # (no entry: the id meant, if one is close; the entries are listed below)
        why = str(NoSuchEntry(main, id_hint(main, runnable))) if isinstance(exc, NoSuchEntry) \
            else str(exc.args[0]) if exc.args else str(exc)
        if main.partition(":")[0] in {i.split(":", 1)[0] for i in config.entries}:
            failed = ""  # an entry id of a namespace of the config, mistyped
        elif "cannot be the root process" in failed or "is not an async function" in failed:
            # a function that exists but cannot be the root: that is the news
            return f"--main {main!r}: {failed}"
        return (f"--main {main!r}: {why}; {_expected_main(runnable, target)}"
                + (f" ({failed})" if failed else ""))
    # (a function.py entry, an activity: no root, as it is no spawn's target anywhere;
    # a workflow.py entry runs as a durable workflow)
    refused = entry_refusal(config, main, durable=True)
    if refused is not None:
        return f"--main {main!r}: {refused}; {_expected_main(_runnable(config), target)}"
    if config.entries[main].kind != "process.service":  # (a service has its input)
        problem = _arguments_problem(root, f"--main {main!r}")
        if problem is not None:
            return problem
    return None


def _module_clash(module: str, config: Any) -> str | None:
    """Why ``--main module:function`` cannot tell which file ``module`` is, or ``None``:
    the current directory holds it and so does a config's folder (or it is imported
    already from another file), with other code. The config's folder stays first on
    ``sys.path`` once the config loaded, so its module ran, in silence, in place of the
    current directory's (the one ``garrison run module:function`` runs): refused,
    naming both files, as a config ``source:`` of a module another file holds is."""
    from .config._loader import module_file, same_code

    here = module_file(module, Path.cwd())
    if here is None:
        return None
    others = [(module_file(module, Path(path).resolve().parent), "in the config's folder")
              for path in config.source_paths]
    others.append((getattr(sys.modules.get(module), "__file__", None), "imported already"))
    for other, where in others:
        if other is not None and not same_code(here, other):
            return (f"the module {module!r} is two files, {here!r} in the current directory "
                    f"and {other!r} {where}: Python holds one module per name, so one would "
                    "run in place of the other; give the modules distinct names or put each "
                    "in a package of a distinct name")
    return None


def _runnable(config: Any) -> list[str]:
    """The ids of the entries ``--main`` may name, in the config's order."""
    return [e.id for e in config.entries.values()
            if e.kind in ("process.py", "workflow.py", "process.service")]


def _expected_main(runnable: list[str], target: str) -> str:
    """What ``--main`` takes, with the config's entries that fit."""
    shown = ", ".join(runnable[:12]) + (", ..." if len(runnable) > 12 else "") \
        if runnable else "none"
    return (f"expected the id (namespace:name) of a process.py, workflow.py or "
            f"process.service entry of {target}: {shown}, or a module:function (an async "
            "def) that imports")


def _main_function(main: str, *, quiet: bool = True) -> Any:
    """``--main mod:fn`` of a config that has no entry ``mod:fn``: the async function
    ``fn`` of the module ``mod`` (importable from the current directory or the config's
    folder), run as the root process; ``None`` if it is not one (``quiet=False``: the
    :class:`_NoRoot` saying why, once it names a module:function)."""
    module, _, func = main.partition(":")
    if not module or not func or is_script(module):
        return None
    try:
        return _load_callable(main)
    except _NoRoot:
        if quiet:
            return None
        raise


def cmd_run(args: argparse.Namespace) -> int:
    target: str = args.target
    config = None
    if is_config(target):
        from .config._loader import load_for_node

        try:
            # loaded before trio starts: a bad config is reported, never a traceback
            # (without --store, a schedule the node would keep in memory too)
            config = load_for_node([target], node_store=args.store is not None)
        except ConfigError as exc:
            print(f"garrison run: invalid config:\n{exc}", file=sys.stderr)
            return 2
    token = args.token or os.environ.get("GARRISON_UI_TOKEN") or None
    problem = ("--token is an option of the console (--ui)"
               if args.token is not None and args.ui is None else None)
    binds: list[tuple[str, str, int, str]] = []
    problem = (problem or _main_problem(args.main, config, target)
               or _store_problem(args.store, config)
               or _console_problem(args.ui, token, "--ui", args.forwarded_allow_ips,
                                   _sessions(args), binds)
               or _metrics_problem(args.metrics, binds) or bind_problems(binds))
    try:
        parse_lease(args.lease, what="--lease", command_line=True)
    except ValueError as exc:
        problem = problem or str(exc)
    if args.name is not None:  # (the node would refuse it as it starts: a traceback)
        from ._node import check_node_name

        try:
            check_node_name(args.name)
        except ValueError as exc:
            problem = problem or f"--name: {exc}"
    if problem is not None:
        print(f"garrison run: {problem}", file=sys.stderr)
        return 2
    try:
        if config is not None:
            root, label = args.main, args.main
            if args.main is not None and args.main not in config.entries:
                root = _main_function(args.main)  # (_main_problem found one)
        else:
            try:
                root, label = _load_callable(target), target
            except _NoRoot as exc:
                print(f"garrison run: {exc}", file=sys.stderr)
                return 2
            except _RanOnImport as exc:  # what it printed is its result: done
                print(f"garrison run: warning: {exc}", file=sys.stderr)
                return 0
        return int(_unwrapped(_serve, config, root, label, args.store, args.ui, token,
                              args.metrics, args.name, args.lease,
                              args.forwarded_allow_ips, _sessions(args)))
    except StoreLocked as exc:  # another node runs on it: say what to do from the shell
        print(f"garrison run: {exc.cli_message}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # what only the node's start finds (the store it is given)
        print(f"garrison run: {exc}", file=sys.stderr)
        return 2
    except (StoreError, StoreVersionError) as exc:
        # a store another node holds, of another schema version, or unusable
        print(f"garrison run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the handler, main() called in-process
        return 130
    except Exception as exc:
        if args.metrics is not None:
            from .metrics import MetricsError

            if isinstance(exc, MetricsError):  # its address is taken, ...
                print(f"garrison run: {exc}", file=sys.stderr)
                return 2
        if args.ui is None:
            raise
        from .console import ConsoleError

        if not isinstance(exc, ConsoleError):  # the console's address is taken, ...
            raise
        print(f"garrison run: {exc}", file=sys.stderr)
        return 2


def cmd_ui(args: argparse.Namespace) -> int:
    """``garrison ui --store S``: serve the web console on a store until SIGINT/SIGTERM."""
    from ._store_tools import ToolError, open_store

    token = args.token or os.environ.get("GARRISON_UI_TOKEN") or None
    binds: list[tuple[str, str, int, str]] = []
    problem = _console_problem(args.bind, token, "--bind", args.forwarded_allow_ips,
                               _sessions(args), binds) or bind_problems(binds)
    if problem is not None:
        print(f"garrison ui: {problem}", file=sys.stderr)
        return 2
    from .console import ConsoleError, serve_console

    try:
        store = open_store(args.store, reads=True)  # (its actions: see StoreBackend)
    except ToolError as exc:
        print(f"garrison ui: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        with _listening() as signals:
            async with trio.open_nursery() as nursery:
                where = await nursery.start(partial(
                    serve_console, store=store, bind=args.bind, token=token,
                    forwarded_allow_ips=args.forwarded_allow_ips, **_sessions(args)))
                announce_console(where, "garrison ui")
                async for signum in signals:
                    log.info("received %s: stopping the console", signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()

    try:
        _unwrapped(serve)
    except ConsoleError as exc:
        print(f"garrison ui: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        store.close()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .config import check_config

    problems = check_config(*args.configs)
    if problems:
        for line in problems:
            print(line)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print("ok: " + ", ".join(args.configs))
    return 0


def cmd_bench(bench_args: list[str]) -> int:
    """``python -m bench`` of a garrison checkout (the benchmarks are not installed);
    every argument is passed on (``--quick``, ``--json``, script names)."""
    import subprocess

    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "bench" / "__main__.py").is_file():
            return subprocess.call([sys.executable, "-m", "bench", *bench_args], cwd=root)
    print("garrison bench: no bench/ folder here; run it from a garrison source checkout",
          file=sys.stderr)
    return 2


_FORWARDED_HELP = ("the console behind a proxy: the proxies' addresses (comma-separated, "
                   "networks allowed, * for any) whose X-Forwarded-Host and "
                   "X-Forwarded-Proto headers are believed; needs --token")


def _session_options(parser: argparse.ArgumentParser) -> None:
    """The console's session expiry options (of ``run --ui`` and ``ui``)."""
    parser.add_argument("--session-idle", metavar="DURATION",
                        help="the console: a login session unused this long expires "
                             "(default 1h)")
    parser.add_argument("--session-max-age", metavar="DURATION",
                        help="the console: a login session this old expires, however "
                             "busy (default 12h)")


def _version() -> str:
    """The installed package's version (``pip install -e .`` records it too)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("garrison")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    levels = ["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"]
    parser = Parser(
        prog="garrison",
        description="The garrison command line: run a node, check configs, inspect and "
                    "drive workflow stores.")
    parser.add_argument("--version", action="version", version=f"garrison {_version()}")
    parser.add_argument("--log-level", default="INFO", choices=levels)
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    # the same options after the sub-command (garrison run app.yaml --log-format json)
    common = Parser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=levels)
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser(
        "run", parents=[common], help="run a config, a Python file or module:function",
        description="Run a node. With a YAML config: start its hosts and auto_start services "
                    "and run until SIGINT/SIGTERM (with --main ENTRY: until that entry's "
                    "process ends). With script.py, script.py:func or module:func: run that "
                    "async function (main by default) as the root process and exit when it "
                    "returns. The first signal stops gracefully and exits 0, a second one "
                    "forces. Exit 1: the root failed; exit 2: bad config or unusable store.")
    run_p.add_argument("target", help="app.yaml (or any other file but a .py: a config), "
                       "script.py, script.py:func or module:func")
    run_p.add_argument("--main", help="with a config: spawn this entry id and exit when it ends")
    run_p.add_argument("--store", help="the store of the node's workflows host: a SQLite file "
                       "(relative to the current directory) or a postgresql://user@host:port/db "
                       "URL (default: in memory)")
    run_p.add_argument("--name", help="this node's name in its cluster (a postgresql:// store; "
                       "default <hostname>-<pid>)")
    run_p.add_argument("--lease", default="10s", help="how long the node stays a cluster "
                       "member without renewing (default 10s, from 1s to 1d): its workflows "
                       "move to the other nodes within two leases of it stopping")
    run_p.add_argument("--ui", metavar="HOST:PORT",
                       help="serve the web console, attached to this node, on this address "
                            "(e.g. 127.0.0.1:8233)")
    run_p.add_argument("--token", help="the console's token, required off loopback "
                       "(default: $GARRISON_UI_TOKEN)")
    run_p.add_argument("--forwarded-allow-ips", metavar="IPS", help=_FORWARDED_HELP)
    _session_options(run_p)
    run_p.add_argument("--metrics", metavar="HOST:PORT",
                       help="serve Prometheus metrics of this node at http://HOST:PORT/metrics "
                            "(e.g. 127.0.0.1:9464; needs garrison[metrics])")
    run_p.set_defaults(func=cmd_run)

    ui_p = sub.add_parser(
        "ui", parents=[common], help="serve the web console on a workflow store",
        description="Serve the web console on a workflow store, whether or not a node runs "
                    "on it (its actions wake that node at once), until SIGINT/SIGTERM. It "
                    "binds to loopback by default; any other address needs --token.")
    ui_p.add_argument("--store", required=True,
                      help="the store: a SQLite file or a postgresql://user@host:port/db URL")
    ui_p.add_argument("--bind", default="127.0.0.1:8233", metavar="HOST:PORT",
                      help="the address to serve on (default 127.0.0.1:8233; port 0: a free one)")
    ui_p.add_argument("--token", help="required on every request; required off loopback "
                      "(default: $GARRISON_UI_TOKEN)")
    ui_p.add_argument("--forwarded-allow-ips", metavar="IPS", help=_FORWARDED_HELP)
    _session_options(ui_p)
    ui_p.set_defaults(func=cmd_ui)

    check_p = sub.add_parser(
        "check", parents=[common], help="validate config files; print every problem",
        description="Load the config files as garrison run would (imports included) and "
                    "print every problem, one line each, naming file, entry and field. "
                    "Exit 0 when they are valid, 1 otherwise.")
    check_p.add_argument("configs", nargs="+", metavar="CONFIG", help="a YAML config file")
    check_p.set_defaults(func=cmd_check)

    # handled in main(): every argument after "bench" goes to python -m bench
    sub.add_parser("bench", help="run the benchmarks against their peers, print a table "
                   "(python -m bench of a source checkout; --quick, --json, script names)")

    from ._cli_nodes import add_parser as add_nodes
    from ._cli_schedules import add_parser as add_schedules
    from ._cli_workflows import add_parser

    add_parser(sub, common)
    add_schedules(sub, common)
    add_nodes(sub, common)
    return parser


def _negative_values(argv: list[str], flags: frozenset[str] = frozenset()) -> list[str]:
    """``--opt -1s`` as ``--opt=-1s``: argparse takes a value that begins with ``-`` and
    is not a plain number for an option, and says ``expected one argument`` instead of
    what is wrong with the value (the option's own check names it). Not for one of
    ``flags``, which take no value (``--json -1e3``: argparse would say ``ignored
    explicit argument``, where the verb says how to give such a value)."""
    out: list[str] = []
    for arg in argv:
        if "--" not in out and out and out[-1].startswith("--") and "=" not in out[-1] \
                and out[-1] not in flags and _DASHED.match(arg) and not _NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _flags(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The options of ``parser`` and of its commands and verbs that take no value
    (``--json``, ``--yes``, ``--help``)."""
    found: set[str] = set()
    for action in parser._actions:
        if action.nargs == 0:
            found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for verb in set(action.choices.values()):
                found |= _flags(verb)
    return frozenset(found)


#: a value that begins with a dash and a digit (``-1s``); argparse itself takes a plain
#: negative number (``-5``, ``-1.5``) as a value, or as a positional argument after a flag
_DASHED = re.compile(r"^-\.?\d")
_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``garrison`` console script and ``python -m garrison``."""
    argv = sys.argv[1:] if argv is None else argv
    escape_unencodable()  # (before anything prints)
    guard_stderr()  # (before argparse and logging write to it)
    if argv[:1] == ["bench"]:
        _cli_signals.restore()
        return cmd_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(_negative_values(argv, _flags(parser)))
    try:
        if args.func not in (cmd_run, cmd_ui):  # (those two act on an early signal)
            _cli_signals.restore()  # (a SIGINT noted meanwhile is raised here)
        setup_logging(args.log_level, args.log_format)
        if args.func is cmd_check:  # (the others that print only act on a store)
            # (output it cannot write is exit 2: its 1 says the config is invalid)
            return run_verb("check", lambda: cmd_check(args), acts=False, unwritten=2)
        code: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C in a command that is no node: no traceback
        print(f"garrison {argv[0]}: interrupted", file=sys.stderr)
        return 130
    if args.func in (cmd_run, cmd_ui):
        _say_threads_left(code)
    return code


def _say_threads_left(code: int) -> None:
    """The node stopped, and the interpreter will wait for the application's threads
    that are not daemons before the process exits: said, naming them (else a stop looks
    hung); a SIGINT or SIGTERM meanwhile exits at once, with the command's exit status
    ``code`` (the root's outcome: it ended before the signal came, which only ends the
    wait; ``128 + the signal`` said a failed root had not failed)."""
    left = [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not left:
        return
    names = ", ".join(t.name for t in left[:5]) + (", ..." if len(left) > 5 else "")
    log.warning("the node stopped; the process waits for %d thread%s of the application "
                "to end before it exits (%s): a SIGINT or SIGTERM now exits at once",
                len(left), "" if len(left) == 1 else "s", names)

    def exit_now(_got: int, _frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):  # (os._exit flushes nothing)
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        logging.shutdown()
        os._exit(code)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_now)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
