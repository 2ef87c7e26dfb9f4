"""The console's guard, in front of every request (an ASGI middleware).

- **Host.** Bound to loopback, the console answers only requests addressed to a
  loopback name (``127.0.0.1``, ``localhost``, ``[::1]``): a page of another site
  whose name was re-pointed at 127.0.0.1 (DNS rebinding) gets 403.
- **Token.** With a token (required off loopback), every request but the login
  pages and the static files must carry ``Authorization: Bearer TOKEN`` or the
  session cookie that ``/auth?code=...`` (the one-time link printed at start) or
  the ``/login`` form sets. Without it: 401 for the API, a redirect to ``/login``
  for a page.
- **Sessions expire**: a session unused for ``session_idle`` (default 1 hour; the
  pages' polling uses it) or older than ``session_max_age`` (default 12 hours, used
  or not) is forgotten, and its cookie is then refused as no session is (401, or the
  login page), so a cookie left in a browser does not open the console for ever.
  The time is trio's (``trio.current_time``; the console runs in trio).
- **Cookies** are named for the port the browser addressed (``garrison_session_8233``,
  ``garrison_csrf_8233``; an address without a port, the scheme's own, names them
  without one): a browser sends a host's cookies to every port of it (RFC 6265), and
  under one name for all, two consoles on one host name would share one cookie, each
  login logging the other out. They are still sent to every server of that host name.
- **CSRF.** A request that changes something (any method but GET and HEAD) must
  carry the header ``X-Garrison-CSRF`` equal to the ``garrison_csrf_PORT`` cookie (which
  the pages set and their script echoes; another site can neither read the cookie
  nor send the header), and an ``Origin``, when the browser sends one, naming the
  console's own ``host[:port]`` (the ``Host`` the browser sent). A request
  authenticated by the bearer header (a script, not a browser) needs neither.
- **Proxies.** Behind a TLS-terminating proxy that keeps the ``Host`` header nothing
  needs configuring. With ``forwarded_allow_ips`` (the addresses of your proxies,
  or ``*``), a request from one of them is taken as the proxy describes it:
  ``X-Forwarded-Host`` is the name the browser used (checked against ``Origin``,
  and its port names the cookies; the loopback-name check is the proxy's business
  then, and a token is required),
  ``X-Forwarded-Proto: https`` makes the ``Origin``'s scheme checked too and the
  cookies ``Secure``. From any other client these headers are ignored.
- Every response forbids inline scripts and framing, and sends referrers only to
  the console itself (CSP and friends; a browser then sends a form's ``Origin``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "SESSION_COOKIE", "SESSION_IDLE", "SESSION_MAX_AGE",
           "Guard", "cookie_names", "csrf_cookie", "is_https", "is_loopback", "parse_proxies",
           "raw_path", "session_cookie"]

#: the session cookie's name, before its port (``garrison_session_8233``: see cookie_names)
SESSION_COOKIE = "garrison_session"
#: a session unused this long (seconds) is forgotten: one must log in again
SESSION_IDLE = 3600.0
#: a session this old (seconds) is forgotten, however busy
SESSION_MAX_AGE = 12 * 3600.0
#: the longest a session cookie is kept (seconds): 400 days, the most browsers keep one
#: (RFC 6265bis), whatever a longer ``session_max_age`` (or ``math.inf``) says
COOKIE_MAX_AGE = 400 * 86400
#: the CSRF cookie's name, before its port (``garrison_csrf_8233``)
CSRF_COOKIE = "garrison_csrf"
CSRF_HEADER = "x-garrison-csrf"
#: paths served without the token (they are how one gets a session)
_OPEN_PATHS = ("/login", "/auth", "/static/")
_SAFE_METHODS = ("GET", "HEAD")
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # not no-referrer: with it Chromium sends a same-origin form's Origin as "null"
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


#: a ``Host`` header (RFC 9110: ``uri-host [":" port]``): a bracketed IPv6 address or a
#: name (or IPv4 address), then a port of digits; nothing else (``127.0.0.1:8271,
#: evil.com`` is no address: a check of its name alone would let it through)
_HOST = re.compile(r"(?P<name>\[[0-9A-Za-z:.%~_-]*\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)"
                   r"(?::(?P<port>[0-9]*))?")

Proxies = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None


def parse_proxies(spec: str | Sequence[str] | None) -> Proxies:
    """``"10.0.0.5,10.1.0.0/16"`` (or a list of them; ``*``: any client) as networks,
    ``None`` for none; ``ValueError`` naming an entry that is not an address."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "*":
            return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        try:
            out.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"--forwarded-allow-ips: {item!r} is not an IP address or "
                             "network (e.g. 127.0.0.1, 10.0.0.0/8, or * for any)") from None
    return tuple(out) or None


def is_https(scope: Scope) -> bool:
    """True when the browser reached the console over HTTPS (as a trusted proxy says)."""
    return bool(scope.get("state", {}).get("https"))


def cookie_names(host: str) -> tuple[str, str]:
    """The session and CSRF cookies' names for a console the browser addresses as
    ``host`` (``host[:port]``, as its ``Host`` header or a trusted proxy's
    ``X-Forwarded-Host`` says): ``garrison_session_8233``, ``garrison_csrf_8233``. A
    browser keeps a host's cookies whatever the port: two consoles on one host name
    (two SSH tunnels, two nodes) each need names of their own. No port (the scheme's
    own: 80, 443): the names alone."""
    address = _HOST.fullmatch(host.strip())
    port = address["port"] if address is not None else None
    if not port:
        return SESSION_COOKIE, CSRF_COOKIE
    return f"{SESSION_COOKIE}_{port}", f"{CSRF_COOKIE}_{port}"


def session_cookie(scope: Scope) -> str:
    """The name of the session cookie of the request ``scope`` (see :func:`cookie_names`)."""
    return str(scope["state"]["cookies"][0])


def csrf_cookie(scope: Scope) -> str:
    """The name of the CSRF cookie of the request ``scope`` (see :func:`cookie_names`)."""
    return str(scope["state"]["cookies"][1])


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Host check, token and CSRF in front of ``app`` (see the module)."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool,
                 forwarded_allow_ips: str | Sequence[str] | None = None,
                 session_idle: float = SESSION_IDLE, session_max_age: float = SESSION_MAX_AGE,
                 clock: Callable[[], float] = trio.current_time) -> None:
        if not session_idle > 0 or not session_max_age > 0:
            raise ValueError(f"session_idle and session_max_age must be positive, got "
                             f"{session_idle!r} and {session_max_age!r}")
        self.app = app
        self.token = token
        self.loopback = loopback
        #: the proxies whose X-Forwarded-Host and X-Forwarded-Proto are believed
        self.proxies = parse_proxies(forwarded_allow_ips)
        #: a session unused this long, or this old, is forgotten (seconds)
        self.session_idle = float(session_idle)
        self.session_max_age = float(session_max_age)
        self._clock = clock
        #: session cookie values handed out by /auth and /login: (created, last used)
        self.sessions: dict[str, tuple[float, float]] = {}
        #: the one-time login code (``None`` once used, or without a token)
        self.code: str | None = secrets.token_urlsafe(24) if token else None

    # -- sessions ----------------------------------------------------------------------
    def token_matches(self, given: str) -> bool:
        """Constant-time comparison with the console's token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def use_code(self, given: str) -> str | None:
        """A new session for the one-time code (which is then spent), or ``None``."""
        if self.code is None or not hmac.compare_digest(given.encode(), self.code.encode()):
            return None
        self.code = None
        return self.new_session()

    def new_session(self) -> str:
        """A fresh session cookie value (and the expired ones forgotten)."""
        now = self._clock()
        for old in [s for s, times in self.sessions.items() if self._expired(times, now)]:
            del self.sessions[old]
        session = secrets.token_urlsafe(32)
        self.sessions[session] = (now, now)
        return session

    def _expired(self, times: tuple[float, float], now: float) -> bool:
        created, used = times
        return now - used >= self.session_idle or now - created >= self.session_max_age

    def use_session(self, session: str | None) -> str | None:
        """``None`` if ``session`` is a live session (now counted as used), else why
        not (an expired one is forgotten)."""
        if not session or session not in self.sessions:
            return "unknown"
        times, now = self.sessions[session], self._clock()
        if self._expired(times, now):
            del self.sessions[session]
            return "expired"
        self.sessions[session] = (times[0], now)
        return None

    def end_session(self, session: str | None) -> bool:
        """Forget ``session`` (a log-out): True if it was a session."""
        if not session:
            return False
        return self.sessions.pop(session, None) is not None

    # -- the middleware ----------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        view = self._view(request)
        state = scope.setdefault("state", {})
        state["https"] = view[0] == "https"
        # (named for the port the browser addressed: see cookie_names)
        state["cookies"] = cookie_names(view[1])
        refusal = self._check(request, view)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *_HEADERS]
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        scope.setdefault("state", {})["guard"] = self
        await self.app(scope, receive, send_with_headers)

    def _trusted(self, request: Request) -> bool:
        """The request comes from one of the proxies the console was told to trust."""
        if self.proxies is None or request.client is None:
            return False
        try:
            address = ipaddress.ip_address(request.client.host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def _view(self, request: Request) -> tuple[str | None, str, bool]:
        """How the browser addressed the console: ``(scheme or None if unknown,
        host[:port], from a trusted proxy)``."""
        host = request.headers.get("host", "")
        if self._trusted(request):
            forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            return proto or None, forwarded or host, True
        return None, host, False

    def _check(self, request: Request, view: tuple[str | None, str, bool]) -> Response | None:
        path = request.url.path
        api = path.startswith("/api/")
        scheme, own_host, proxied = view
        given = request.headers.get("host", "")
        address = _HOST.fullmatch(given)
        if address is None:  # ("[::1": an unclosed IPv6 address; a list of two)
            return _refuse(api, 400, f"malformed Host header {given!r}")
        # behind a trusted proxy (with a token) the proxy decides which names reach us
        if self.loopback and not (proxied and self.token is not None):
            host = address["name"]
            if not is_loopback(host):
                return _refuse(api, 403, f"host {host!r} is not this console's address "
                                         "(it answers loopback names only)")
        bearer = False
        if self.token is not None and not path.startswith(_OPEN_PATHS):
            auth = request.headers.get("authorization", "")
            kind, _, given = auth.partition(" ")
            if kind.lower() == "bearer" and self.token_matches(given.strip()):
                bearer = True
            elif (why := self.use_session(
                    request.cookies.get(session_cookie(request.scope)))) is not None:
                if api or request.method not in _SAFE_METHODS:
                    if why == "expired":
                        return _refuse(True, 401, "this console session has expired (unused "
                                                  f"for {self.session_idle:g}s, or older than "
                                                  f"{self.session_max_age:g}s): log in again "
                                                  "at /login")
                    return _refuse(True, 401, "this console needs its token: send "
                                              "'Authorization: Bearer TOKEN', or log in at /login")
                then = raw_path(request.scope) + ("?" + request.url.query
                                                   if request.url.query else "")
                return RedirectResponse("/login" if then == "/" else
                                        "/login?next=" + quote(then, safe=""), status_code=303)
        if request.method not in _SAFE_METHODS and not bearer:
            return self._check_csrf(request, api, scheme, own_host, proxied)
        return None

    def _check_csrf(self, request: Request, api: bool, scheme: str | None, own_host: str,
                    proxied: bool) -> Response | None:
        origin = request.headers.get("origin")
        if origin is not None:
            try:
                parts = urlsplit(origin)
            except ValueError:  # ("http://[x": no browser sends that)
                return _refuse(api, 403, f"cross-site request refused (malformed Origin "
                                         f"header {origin!r})")
            # Origin and Host are written by the browser from one URL: the same
            # host[:port]. Its scheme is known only from a trusted proxy (behind a TLS
            # proxy the browser says https, the console sees http).
            same = parts.scheme in ("http", "https") and \
                parts.netloc.lower() == own_host.lower() and \
                (scheme is None or parts.scheme == scheme)
            if not same:
                hint = ""
                if not proxied and ("x-forwarded-host" in request.headers
                                    or "x-forwarded-proto" in request.headers):
                    hint = ("; behind a proxy that changes the Host header, start the "
                            "console with --forwarded-allow-ips PROXY_ADDRESS")
                return _refuse(api, 403, f"cross-site request refused (Origin {origin!r} "
                                         f"is not this console's {own_host!r}{hint})")
        if request.url.path == "/login":
            return None  # the login form: nothing to forge before a session exists
        name = csrf_cookie(request.scope)
        cookie = request.cookies.get(name, "")
        header = request.headers.get(CSRF_HEADER, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
            return _refuse(api, 403, f"missing or wrong CSRF token: send the header "
                                     f"'X-Garrison-CSRF' equal to the {name!r} cookie")
        return None


def raw_path(scope: Scope) -> str:
    """The path as the browser sent it (still percent-encoded: a workflow id with
    ``%2F`` or ``%252E`` in it goes back after a login as it came), else the decoded
    path encoded again."""
    raw = scope.get("raw_path")
    if raw:
        return bytes(raw).decode("latin-1")
    return quote(scope["path"], safe="/")


def _refuse(api: bool, status: int, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    return Response(message + "\n", status_code=status, media_type="text/plain")


def csrf_cookie_args(scope: Scope, value: str) -> dict[str, Any]:
    """The CSRF cookie of the request ``scope``: readable by the page's script, sent
    only to this site (and only over HTTPS when the browser came by HTTPS)."""
    return {"key": csrf_cookie(scope), "value": value, "httponly": False,
            "samesite": "strict", "path": "/", "secure": is_https(scope)}


def session_cookie_args(scope: Scope, value: str, *,
                        max_age: float | None = None) -> dict[str, Any]:
    """The session cookie of the request ``scope``: not readable by scripts, sent only
    to this site (only over HTTPS when the browser came by HTTPS), and kept by the
    browser ``max_age`` seconds at most: the session's own maximum age."""
    args: dict[str, Any] = {"key": session_cookie(scope), "value": value, "httponly": True,
                            "samesite": "strict", "path": "/", "secure": is_https(scope)}
    if max_age is not None:  # (``inf``: no maximum age of the session's own)
        args["max_age"] = max(1, int(min(max_age, COOKIE_MAX_AGE)))
    return args
