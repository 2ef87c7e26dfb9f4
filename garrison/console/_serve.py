"""Serving the console: Hypercorn's trio worker in the caller's nursery."""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from .._bind import split_bind
from .._node import check_node
from ._app import make_app
from ._backend import Backend, NodeBackend, StoreBackend
from ._security import SESSION_IDLE, SESSION_MAX_AGE, is_loopback, parse_proxies

__all__ = ["DEFAULT_BIND", "ConsoleAddress", "ConsoleError", "check_bind", "check_sessions",
           "serve_console"]

log = logging.getLogger("garrison.console")

#: Hypercorn's own log: its problems, not its start-up lines (we say where we serve)
_http_log = logging.getLogger("garrison.console.http")
_http_log.setLevel(logging.WARNING)

DEFAULT_BIND = "127.0.0.1:8233"
#: the shortest token accepted (a guessable token would open the console to the network)
MIN_TOKEN = 16


class ConsoleError(Exception):
    """The console cannot serve (its address is taken, or refused by the system)."""


@attrs.frozen
class ConsoleAddress:
    """Where a started console answers: ``url`` (``http://127.0.0.1:8233/``), and with a
    token the one-time ``login_url`` that opens a browser session."""

    url: str
    login_url: str | None = None


def check_bind(bind: str, token: str | None,
               forwarded_allow_ips: str | list[str] | None = None, *,
               cli: bool = False) -> tuple[str, int, bool]:
    """``(host, port, loopback)`` of ``HOST:PORT``; ``ValueError`` naming the problem,
    and for an address other than loopback without a token (or with a short one), a
    token that is not printable ASCII (no header could carry it), or trusted proxies
    (``forwarded_allow_ips``: they serve it to the network) without a token;
    ``TypeError`` for a ``bind`` or ``token`` that is no string. The messages name the
    arguments (``bind``, ``token``), or with ``cli`` the options (``--bind``)."""
    bind_, token_, proxies_ = (("--bind", "--token", "--forwarded-allow-ips") if cli
                               else ("bind", "token", "forwarded_allow_ips"))
    need = "--token (or GARRISON_UI_TOKEN)" if cli else "a token= argument"
    host, port = split_bind(bind, bind_, DEFAULT_BIND)
    if token is not None and not isinstance(token, str):
        raise TypeError(f"{token_}: expected a string, got {type(token).__name__}")
    loopback = is_loopback(host)
    odd = next((c for c in token if not "!" <= c <= "~"), None) if token else None
    if token is not None and odd is not None:
        # a header is Latin-1 and its value trimmed: 'Authorization: Bearer' could
        # never carry it, though the console would start
        raise ValueError(f"{token_}: {odd!r} at position {token.index(odd)} (of "
                         f"{len(token)}) is not printable ASCII; a token is sent in an "
                         "HTTP header: letters, digits and punctuation only (no space, "
                         "newline or accented letter); make one with: python -c "
                         "'import secrets; print(secrets.token_urlsafe(24))'")
    if token is not None and len(token) < MIN_TOKEN:
        raise ValueError(f"{token_}: expected at least {MIN_TOKEN} characters, got "
                         f"{len(token)}; make one with: python -c "
                         "'import secrets; print(secrets.token_urlsafe(24))'")
    if not loopback and token is None:
        raise ValueError(f"{bind_} {bind!r} is not a loopback address: serving the console "
                         f"to the network needs {need}; bind "
                         f"{DEFAULT_BIND} to serve this machine only")
    try:
        proxies = parse_proxies(forwarded_allow_ips)
    except ValueError as exc:  # (named as the caller spells it)
        raise ValueError(str(exc).replace("--forwarded-allow-ips", proxies_, 1)) from None
    if proxies is not None and token is None:
        raise ValueError(f"{proxies_}: a console behind a proxy is served to the "
                         f"network and needs {need}")
    return host, port, loopback


async def serve_console(*, store: Any = None, node: Any = None, bind: str = DEFAULT_BIND,
                        token: str | None = None,
                        forwarded_allow_ips: str | list[str] | None = None,
                        session_idle: float | str = SESSION_IDLE,
                        session_max_age: float | str = SESSION_MAX_AGE,
                        task_status: trio.TaskStatus[ConsoleAddress] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """Serve the web console until cancelled; ``task_status.started`` gives its
    :class:`ConsoleAddress` (use it with ``nursery.start``).

    Attached to a running ``node`` the console shows live statuses, processes,
    services and the supervision tree, and acts through the node API. Given a
    ``store`` instead (a path, opened with ``lock=False`` like ``garrison workflows``
    does, or an open store) it works whether or not a node holds the store; its
    writes wake that node at once.

    ``bind`` is ``HOST:PORT`` (port 0: a free one). Any address but loopback needs a
    ``token`` (``ValueError`` otherwise); with one, every request must carry it (see
    README, "Web console"). ``forwarded_allow_ips`` (``"10.0.0.5"``, a list, ``"*"``)
    are the proxies whose ``X-Forwarded-Host`` / ``X-Forwarded-Proto`` are believed
    (they need a ``token`` too). A login session (a browser's, with a token) expires
    once unused for ``session_idle`` (default 1 hour) and once ``session_max_age``
    old (default 12 hours): durations, ``"30m"`` or seconds (``ValueError`` unless
    positive, ``TypeError`` if neither a number nor a string).

    Attached to a node it serves every durable workflow host (a ``host`` selector),
    starting with the one ``workflows`` names (or, if that is in memory, the first
    whose store persists).

    >>> async with trio.open_nursery() as nursery:            # doctest: +SKIP
    ...     where = await nursery.start(partial(serve_console, node=node))
    ...     print(where.url)
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    host, port, loopback = check_bind(bind, token, forwarded_allow_ips)
    idle, max_age = check_sessions(session_idle, session_max_age)
    backend: Backend
    if node is not None:
        check_node(node, "serve_console(node=...)")
        if store is not None:
            raise ValueError("serve_console takes node= or store=, not both: attached to a "
                             "node it serves that node's stores")
        backend = NodeBackend(node)
    elif isinstance(store, str) or hasattr(store, "__fspath__"):
        from .._store_tools import ToolError, open_store

        try:
            opened = open_store(str(store), reads=True)  # (see StoreBackend)
        except ToolError as exc:  # (the tools' own error: not the Python API's)
            raise ValueError(f"serve_console(store=...): {exc}") from None
        backend = StoreBackend(opened, owned=True)
    elif store is not None:
        if not callable(getattr(store, "list_workflows", None)):
            raise TypeError(f"serve_console(store=...): expected a store's path, a "
                            f"postgresql:// URL or an open store, got "
                            f"{type(store).__name__} {store!r:.40}")
        backend = StoreBackend(store)
    else:
        raise ValueError("serve_console needs a node or a store")
    try:
        app = make_app(backend, token=token, loopback=loopback,
                       forwarded_allow_ips=forwarded_allow_ips, session_idle=idle,
                       session_max_age=max_age)
        config = Config()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = _http_log
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            try:
                binds: list[str] = await nursery.start(serve, app, config)
            except (OSError, BaseExceptionGroup) as exc:
                error = _os_error(exc)
                if error is None:
                    raise
                reason = error.strerror or str(error)
                raise ConsoleError(f"cannot serve the console on {bind}: {reason}") from None
            url = _browsable(binds[0].rstrip("/") + "/")
            login = f"{url}auth?code={app.code}" if app.code else None
            log.debug("web console at %s", url)
            task_status.started(ConsoleAddress(url, login))
    finally:
        backend.close()


def check_sessions(idle: float | str, max_age: float | str, *,
                   cli: bool = False) -> tuple[float, float]:
    """``(idle, max_age)`` in seconds of the console's session expiry (durations:
    ``"30m"``, ``"12h"``, seconds); ``ValueError`` naming the argument (with ``cli``,
    the option) otherwise, ``TypeError`` for one that is neither a number nor a
    string (``[1]``, ``None``, ``True``)."""
    from .._duration import parse_duration

    out = []
    for value, option in ((idle, "--session-idle" if cli else "session_idle"),
                          (max_age, "--session-max-age" if cli else "session_max_age")):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            # (parse_duration's ValueError says "of type list": a wrong type, as for
            # bind= and token=, is a TypeError)
            raise TypeError(f"{option}: expected seconds or a duration string like '30m', "
                            f"got {type(value).__name__}")
        negative = isinstance(value, int | float) and not isinstance(value, bool) \
            and value < 0
        seconds = -1.0 if negative else parse_duration(value, what=option,
                                                       command_line=cli)
        if not seconds > 0:
            raise ValueError(f"{option} {value!r}: expected a positive duration, e.g. 30m")
        out.append(seconds)
    return out[0], out[1]


def _browsable(url: str) -> str:
    """``url`` with a wildcard address (``0.0.0.0``, ``[::]``: every interface, which
    no browser can open) replaced by this machine's name."""
    parts = urlsplit(url)
    if parts.hostname in ("0.0.0.0", "::"):
        name = socket.gethostname() or "localhost"
        return parts._replace(netloc=f"{name}:{parts.port}").geturl()
    return url


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` that made the server fail to start (possibly inside groups)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None
