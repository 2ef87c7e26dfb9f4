"""The console's guard, in front of every request (an ASGI middleware).

- **Host.** Bound to loopback, the console answers only requests addressed to a
  loopback name (``127.0.0.1``, ``localhost``, ``[::1]``): a page of another site
  whose name was re-pointed at 127.0.0.1 (DNS rebinding) gets 403.
- **Token.** With a token (required off loopback), every request but the login
  pages and the static files must carry ``Authorization: Bearer TOKEN`` or the
  session cookie that ``/auth?code=...`` (the one-time link printed at start) or
  the ``/login`` form sets. Without it: 401 for the API, a redirect to ``/login``
  for a page.
- **CSRF.** A request that changes something (any method but GET and HEAD) must
  carry the header ``X-Garrison-CSRF`` equal to the ``garrison_csrf`` cookie (which
  the pages set and their script echoes; another site can neither read the cookie
  nor send the header), and an ``Origin``, when the browser sends one, equal to the
  console's own. A request authenticated by the bearer header (a script, not a
  browser) needs neither.
- Every response forbids inline scripts, framing and referrers (CSP and friends).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "SESSION_COOKIE", "Guard", "is_loopback"]

SESSION_COOKIE = "garrison_session"
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
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


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

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback
        #: session cookie values handed out by /auth and /login
        self.sessions: set[str] = set()
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
        """A fresh session cookie value."""
        session = secrets.token_urlsafe(32)
        self.sessions.add(session)
        return session

    # -- the middleware ----------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._check(request)

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

    def _check(self, request: Request) -> Response | None:
        path = request.url.path
        api = path.startswith("/api/")
        if self.loopback:
            host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
            if not is_loopback(host):
                return _refuse(api, 403, f"host {host!r} is not this console's address "
                                         "(it answers loopback names only)")
        bearer = False
        if self.token is not None and not path.startswith(_OPEN_PATHS):
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(given.strip()):
                bearer = True
            elif request.cookies.get(SESSION_COOKIE) not in self.sessions:
                if api or request.method not in _SAFE_METHODS:
                    return _refuse(True, 401, "this console needs its token: send "
                                              "'Authorization: Bearer TOKEN', or log in at /login")
                return RedirectResponse("/login", status_code=303)
        if request.method not in _SAFE_METHODS and not bearer:
            return self._check_csrf(request, api)
        return None

    @staticmethod
    def _check_csrf(request: Request, api: bool) -> Response | None:
        origin = request.headers.get("origin")
        if origin is not None:
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own:
                return _refuse(api, 403, f"cross-site request refused (Origin {origin!r})")
        if request.url.path == "/login":
            return None  # the login form: nothing to forge before a session exists
        cookie = request.cookies.get(CSRF_COOKIE, "")
        header = request.headers.get(CSRF_HEADER, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
            return _refuse(api, 403, f"missing or wrong CSRF token: send the header "
                                     f"'X-Garrison-CSRF' equal to the {CSRF_COOKIE!r} cookie")
        return None


def _refuse(api: bool, status: int, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    return Response(message + "\n", status_code=status, media_type="text/plain")


def csrf_cookie_args(value: str) -> dict[str, Any]:
    """The CSRF cookie: readable by the page's script, sent only to this site."""
    return {"key": CSRF_COOKIE, "value": value, "httponly": False, "samesite": "strict",
            "path": "/"}


def session_cookie_args(value: str) -> dict[str, Any]:
    """The session cookie: not readable by scripts, sent only to this site."""
    return {"key": SESSION_COOKIE, "value": value, "httponly": True, "samesite": "strict",
            "path": "/"}
