"""The console as an ASGI application (Starlette): three pages and the JSON API.

The pages are small Jinja2 skeletons (autoescaped); ``static/console.js`` fills them
from the JSON API and builds every element with ``textContent`` (never ``innerHTML``
with data), polling while something can change. The API is documented in README.md
("Web console").
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, unquote_to_bytes

import jinja2
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .._errors import PayloadError, StoreError
from .._store_tools import ToolError, check_name, check_rejection, check_topic, standard_json
from ..persistence import DamagedRecord
from ._backend import ApiError, Backend, parse_search, parse_statuses, strict_json
from ._security import (
    SESSION_IDLE,
    SESSION_MAX_AGE,
    Guard,
    csrf_cookie,
    csrf_cookie_args,
    is_https,
    raw_path,
    session_cookie,
    session_cookie_args,
)

__all__ = ["make_app"]

_HERE = Path(__file__).parent
#: workflows on one page of the list, by default and at most
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: how long (seconds) a request's body may take to arrive, all of it
BODY_TIMEOUT = 10.0
#: the largest request body read (bytes): a signal's payload or a promise's value (the
#: command line and the Python API take larger ones), and the login form's. Checked as
#: it arrives: ``/login`` is open to anyone, and a body read whole before any check
#: would let any client fill the node's memory
MAX_BODY = 1024 * 1024
#: the largest login form read (bytes): a token and the page to go back to. ``/login``
#: is open to anyone, so its bodies are kept small and few (``LOGINS_AT_ONCE``)
LOGIN_MAX_BODY = 16 * 1024
#: the login forms read at once, at most (each up to LOGIN_MAX_BODY, for up to
#: BODY_TIMEOUT): one more is refused at once (503), so that anonymous clients that
#: each send part of a form and stall cannot fill the node's memory. Only logins count:
#: a flood of them must not refuse the requests of those logged in (a session, a token)
LOGINS_AT_ONCE = 32
#: a workflow's action URLs (a GET there is 405, unless a workflow has that very id)
#: a promise action's path as sent, still percent-encoded (``rest``: id and name)
_PROMISE_ACTION = re.compile(r"/api/workflows/(?P<rest>.+)/(?:resolve|reject)$")
_ACTION = re.compile(r"^(?P<wid>.+)/(?:signal|cancel|retry|promises/.+/(?:resolve|reject))$")


#: what console.js's ``BIDI`` matches but tab and newline: control characters (a
#: carriage return too), Unicode's bidirectional controls, the line and paragraph
#: separators and every default-ignorable character (Python's ``re`` has no
#: ``\\p{Default_Ignorable_Code_Point}``: its ranges, as Unicode lists them)
_BIDI = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5"
                   "\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f"
                   "\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
                   "\U000e0000-\U000e0fff]")


def visible(text: object) -> str:
    """``text`` with each bidirectional control, character that shows nothing (zero
    width, the BOM, a variation selector, a tag character) and control character but
    tab and newline (a carriage return too) shown as its ``\\uXXXX``, one past U+FFFF
    as its two (a crafted id could otherwise read as another text in a page's title),
    as console.js's ``visible()`` does for what the pages load."""
    return _BIDI.sub(lambda m: _escape(m.group()), str(text))


def _escape(char: str) -> str:
    """``char`` as JSON (and console.js) write it: ``\\u202E``, or its UTF-16 pair."""
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}"


def make_app(backend: Backend, *, token: str | None = None, loopback: bool = True,
             forwarded_allow_ips: str | list[str] | None = None,
             session_idle: float = SESSION_IDLE,
             session_max_age: float = SESSION_MAX_AGE) -> Guard:
    """The console's ASGI application over ``backend``, behind its :class:`Guard`
    (``token``: required on every request; ``loopback``: answer loopback names only;
    ``forwarded_allow_ips``: the proxies whose ``X-Forwarded-*`` headers are believed;
    ``session_idle`` / ``session_max_age``: seconds after which a login session
    expires, unused / in any case)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                             autoescape=True)
    env.filters["visible"] = visible
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        guard: Guard = request.scope["state"]["guard"]
        response = templates.TemplateResponse(
            request, name, {"live": backend.live, "store": backend.store.path,
                            "read_only": backend.read_only,
                            "logout": guard.token is not None,
                            "csrf_cookie": csrf_cookie(request.scope), **context},
            status_code=status_code)
        if not request.cookies.get(csrf_cookie(request.scope)):
            response.set_cookie(**csrf_cookie_args(request.scope, secrets.token_urlsafe(24)))
        return response

    # -- pages ---------------------------------------------------------------------------
    def stopped() -> Response | None:
        """A page's answer once the node this console is attached to stopped (503, as
        the API's), else ``None``."""
        try:
            backend.running()
        except ApiError as exc:
            return Response(f"{exc.message}\n", status_code=exc.status,
                            media_type="text/plain")
        return None

    async def list_page(request: Request) -> Response:
        return stopped() or page(request, "list.html", title="Workflows")

    async def workflow_page(request: Request) -> Response:
        wid = _segment(request.path_params["wid"])
        refused = stopped()
        if refused is not None:
            return refused
        try:
            await backend.locate(wid, _host(request))
        except ApiError as exc:
            if exc.status == 404:  # (a link to a workflow no store holds: 404, as the API)
                return page(request, "workflow.html", 404, title=wid, workflow_id=wid,
                            missing=exc.message)
            # (anything else, a bad host=, an unusable store: the page shows the API's
            # answer as it loads)
        return page(request, "workflow.html", title=wid, workflow_id=wid)

    async def node_page(request: Request) -> Response:
        if not backend.live:  # (a store's console: no processes to show, as /api/node)
            try:
                backend.node_view()
            except ApiError as exc:
                return Response(f"{exc.message}\n", status_code=exc.status,
                                media_type="text/plain")
        return stopped() or page(request, "node.html", title="Node")

    async def login_page(request: Request) -> Response:
        guard: Guard = request.scope["state"]["guard"]
        then = _local_path(request.query_params.get("next"))
        if guard.token is None and request.method != "POST":
            # no token, no login: the page asked for (the form could never succeed)
            return RedirectResponse(then, status_code=303)
        if request.method == "POST":
            # a urlencoded form (no multipart parser needed)
            try:
                raw = await _read_body(request, login=True)
            except ApiError as exc:
                return Response(exc.message + "\n", status_code=exc.status,
                                media_type="text/plain")
            form = parse_qs(raw.decode("utf-8", "replace"))
            given = form.get("token", [""])[0]
            then = _local_path(form.get("next", [then])[0])
            if guard.token is None:
                return RedirectResponse(then, status_code=303)
            if given and guard.token_matches(given):
                return _logged_in(request, guard.new_session(), then)
            return templates.TemplateResponse(request, "login.html",
                                              {"title": "Log in", "failed": True,
                                               "anonymous": True, "next": then},
                                              status_code=401)
        return templates.TemplateResponse(request, "login.html",
                                          {"title": "Log in", "failed": False,
                                           "anonymous": True, "next": then})

    async def auth(request: Request) -> Response:
        guard: Guard = request.scope["state"]["guard"]
        session = guard.use_code(request.query_params.get("code", ""))
        if session is None:
            return Response("This login link is not valid (it works once). Log in with the "
                            "console's token at /login.\n", status_code=403,
                            media_type="text/plain")
        return _logged_in(request, session, "/")

    async def api_logout(request: Request) -> Response:
        """End the caller's session (the header's "Log out"): its cookie is refused
        from now on, as no session is. ``logged_out``: whether there was one."""
        await _read_body(request)  # (nothing in it is used; no more of it than any POST)
        guard: Guard = request.scope["state"]["guard"]
        name = session_cookie(request.scope)
        ended = guard.end_session(request.cookies.get(name))
        response = JSONResponse({"logged_out": ended})
        if ended:
            response.delete_cookie(name, path="/", secure=is_https(request.scope),
                                   httponly=True, samesite="strict")
        return response

    # -- the JSON API --------------------------------------------------------------------
    async def api_capabilities(request: Request) -> Response:
        return await _json(request, backend.capabilities())

    async def api_workflows(request: Request) -> Response:
        q = request.query_params
        statuses = parse_statuses(q.getlist("status"))
        search = parse_search(q.getlist("search"))
        limit = _int(_one(request, "limit"), "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        order = _one(request, "order") or "newest"
        if order not in ("newest", "oldest"):
            raise ApiError(400, f"order={order!r}: expected 'newest' or 'oldest'")
        page = await backend.list_page(statuses, search, _one(request, "id") or None,
                                       _one(request, "after") or None, limit,
                                       newest_first=order == "newest", host=_host(request),
                                       parent=_one(request, "parent") or None)
        return await _json(request, page)

    async def api_workflow(request: Request) -> Response:
        wid = _segment(request.path_params["wid"])
        try:
            return await _json(request, await backend.detail(wid, _host(request)))
        except ApiError as exc:
            # GET on an action's URL (that is not itself the id of a workflow)
            if exc.status == 404 and _ACTION.match(request.path_params["wid"]):
                return JSONResponse({"error": f"{request.url.path} takes POST only"},
                                    status_code=405, headers={"Allow": "POST"})
            raise

    async def api_no_action(request: Request) -> Response:
        """A POST to a workflow's URL, or to an action the console has not (a
        ``terminate``, which Temporal's UI offers): 405, naming it and the actions."""
        path = request.url.path
        actions = ("a workflow's actions are POST /api/workflows/ID/signal, /cancel, "
                   "/retry, /promises/NAME/resolve and /promises/NAME/reject")
        wid = request.path_params["wid"]
        if wid.endswith("/"):  # (a client that ends its URLs so: ".../cancel/")
            message = (f"POST {path}: an action's URL has no '/' at its end (POST "
                       f"{path.rstrip('/')}): {actions}")
        elif "/" in wid:  # (an id may hold "/": its URL's last part, taken for an action)
            name = _segment(wid.rpartition("/")[2])
            hint = (" (to terminate: garrison workflows terminate, or the handle's "
                    "terminate())" if name == "terminate" else "")
            message = (f"the console has no action {name!r} (POST {path}; a workflow's "
                       f"URL takes GET): {actions}{hint}")
        else:
            message = f"POST {path}: a workflow's URL takes GET; {actions}"
        return JSONResponse({"error": message}, status_code=405,
                            headers={"Allow": "GET, HEAD"})

    async def api_signal(request: Request) -> Response:
        wid = _segment(request.path_params["wid"])
        body = await _body(request, "signal", ("topic", "payload"))
        topic = _checked(check_topic, body.get("topic"))
        out = await backend.signal(wid, topic, body.get("payload"), _host(request))
        return await _json(request, {"ok": True, "workflow_id": wid, "signal": topic, **out})

    async def promise_target(request: Request) -> tuple[str, str]:
        """``(workflow id, promise name)`` of a promise action's URL. Either may hold
        "/promises/". As sent, with each ``/`` of the id and the name written ``%2F``
        (as the pages write them), the path holds "/promises/" once: the cut is there.
        Else (a client that leaves them as they are), of the ways to cut the decoded
        path there, the one with the longest id that names a workflow."""
        sent = _PROMISE_ACTION.search(raw_path(request.scope).partition("?")[0])
        if sent is not None and sent["rest"].count("/promises/") == 1:
            wid, _, name = sent["rest"].partition("/promises/")
            cuts = [(_segment(unquote(wid)), _segment(unquote(name)))]
        else:
            joined = f"{request.path_params['wid']}/promises/{request.path_params['name']}"
            at = joined.find("/promises/")
            cuts = []
            while at >= 0:
                cuts.insert(0, (_segment(joined[:at]),
                                _segment(joined[at + len("/promises/"):])))
                at = joined.find("/promises/", at + 1)
        for wid, name in cuts:
            if not wid or not name:
                continue
            try:  # (a store or node that cannot answer says so before the body's check)
                await backend.locate(wid, _host(request))
            except ApiError as exc:
                if exc.status == 404 and len(cuts) > 1:
                    continue
                if exc.status != 404:
                    raise
            return wid, name  # (no such workflow: the action says so)
        wid, name = _segment(request.path_params["wid"]), _segment(request.path_params["name"])
        if not name:
            raise ApiError(400, "a promise name must be a non-empty string")
        return wid, name  # no such workflow: the action says so

    async def api_resolve(request: Request) -> Response:
        wid, name = await promise_target(request)
        name = _checked(check_name, name)  # (as the command line: before the store)
        body = await _body(request, "resolve", ("value",), required=("value",))
        await backend.resolve(wid, name, body["value"], _host(request))
        return await _json(request, {"ok": True, "workflow_id": wid, "promise": name,
                               "resolved": body["value"]})

    async def api_reject(request: Request) -> Response:
        wid, name = await promise_target(request)
        name = _checked(check_name, name)
        body = await _body(request, "reject", ("message",))
        message = _checked(check_rejection, body.get("message"))
        await backend.reject(wid, name, message, _host(request))
        return await _json(request, {"ok": True, "workflow_id": wid, "promise": name,
                               "rejected": message})

    async def api_cancel(request: Request) -> Response:
        wid = _segment(request.path_params["wid"])
        await _body(request, "cancel", ())
        await backend.cancel(wid, _host(request))
        return await _json(request, {"ok": True, "workflow_id": wid, "cancel_requested": True})

    async def api_retry(request: Request) -> Response:
        wid = _segment(request.path_params["wid"])
        await _body(request, "retry", ())
        note = await backend.retry(wid, _host(request))
        return await _json(request, {"ok": True, "workflow_id": wid, "retry": note})

    async def api_node(request: Request) -> Response:
        return await _json(request, backend.node_view())

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def payload_error(request: Request, exc: Exception) -> Response:
        # JSON that parsed but that the store cannot hold (nested deeper than its
        # converter goes): the request's fault, named, not a 500 with a stack trace
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def store_error(request: Request, exc: Exception) -> Response:
        # the store cannot be used now (locked past the busy timeout, its file deleted
        # or replaced, the disk full, the server gone): the console's JSON error,
        # naming the store and why, not a plain-text 500
        if isinstance(exc, DamagedRecord) and exc.too_long:
            # (nothing damaged: a whole number longer than this Python reads, which the
            # error says how to read)
            message = f"the store cannot be read by this Python: {exc}"
        elif isinstance(exc, sqlite3.DatabaseError | json.JSONDecodeError):
            # a read of a damaged SQLite file, or of a row whose JSON is no JSON
            message = (f"the store cannot be read: {exc} (damaged, or not a garrison "
                       "store any more)")
        else:
            assert isinstance(exc, StoreError)
            message = " ".join(str(exc).split())  # one line
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=503)
        return Response(f"{message}\n", status_code=503, media_type="text/plain")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        return Response(f"{exc.detail}\n", status_code=exc.status_code, media_type="text/plain")

    wid = "/api/workflows/{wid:path}"
    routes = [
        Route("/", list_page),
        Route("/workflows/{wid:path}", workflow_page),
        Route("/node", node_page),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/auth", auth),
        Route("/api/logout", api_logout, methods=["POST"]),
        Route("/api/capabilities", api_capabilities),
        Route("/api/workflows", api_workflows),
        Route("/api/node", api_node),
        # actions first: a workflow id may itself contain "/", and so may a promise
        # name (see promise_target)
        Route(wid + "/signal", api_signal, methods=["POST"]),
        Route(wid + "/promises/{name:path}/resolve", api_resolve, methods=["POST"]),
        Route(wid + "/promises/{name:path}/reject", api_reject, methods=["POST"]),
        Route(wid + "/cancel", api_cancel, methods=["POST"]),
        Route(wid + "/retry", api_retry, methods=["POST"]),
        Route(wid, api_workflow),
        Route(wid, api_no_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: api_error,
                                                       PayloadError: payload_error,
                                                       StoreError: store_error,
                                                       sqlite3.DatabaseError: store_error,
                                                       json.JSONDecodeError: store_error,
                                                       HTTPException: http_error})
    app.state.logins = 0  # the login forms being read now (see _read_body)
    return Guard(_text_request(app), token=token, loopback=loopback,
                 forwarded_allow_ips=forwarded_allow_ips, session_idle=session_idle,
                 session_max_age=session_max_age)


def _text_request(app: Starlette) -> Any:
    """``app`` behind a check of the path and query as sent: 400 naming a path segment,
    or a query parameter's name or value, whose bytes (``%ED%A0%80``, ``%FF``) are not
    UTF-8, before anything is done. The server decodes such bytes to U+FFFD, so an
    action would act on another id or promise name (the workflow ``'\ufffd'``), and a
    list would match other ids (``id=%FF``); the command line refuses them too, a JSON
    body as well."""

    async def checked(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            message = _not_text(raw_path(scope).partition("?")[0].encode("latin-1"),
                                bytes(scope.get("query_string") or b""))
            if message is not None:
                response: Response = JSONResponse({"error": message}, status_code=400) \
                    if scope["path"].startswith("/api/") \
                    else Response(message + "\n", status_code=400, media_type="text/plain")
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return checked


def _not_text(path: bytes, query: bytes) -> str | None:
    """Why the path or query as sent (the bytes, ``%XX`` undecoded) is not text, naming
    the path segment or query parameter; ``None`` if every part is UTF-8."""
    for sent in path.split(b"/"):
        if not _utf_8(sent):
            return (f"the path segment {_sent(sent)} is not valid UTF-8 once its %XX are "
                    "decoded (a workflow id or promise name is text)")
    for part in query.split(b"&") if query else ():
        name, _, value = part.partition(b"=")
        if not _utf_8(name):
            return (f"the query parameter name {_sent(name)} is not valid UTF-8 once its "
                    "%XX are decoded (a query parameter is text)")
        if not _utf_8(value):
            return (f"the value {_sent(value)} of the query parameter {_sent(name)} is "
                    "not valid UTF-8 once its %XX are decoded (a query parameter is text)")
    return None


def _utf_8(sent: bytes) -> bool:
    """Whether ``sent`` is UTF-8 once its ``%XX`` are decoded."""
    try:
        unquote_to_bytes(sent).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sent(sent: bytes) -> str:
    """Part of a URL as it was sent, for a message: quoted, a long one cut."""
    shown = sent.decode("latin-1")
    if len(shown) > 60:
        shown = f"{shown[:60]}... ({len(shown)} bytes)"
    return repr(shown)


def _logged_in(request: Request, session: str, then: str) -> Response:
    guard: Guard = request.scope["state"]["guard"]
    response = RedirectResponse(then, status_code=303)
    response.set_cookie(**session_cookie_args(request.scope, session,
                                              max_age=guard.session_max_age))
    return response


def _local_path(then: str | None) -> str:
    """``then`` if it is a path of this console (``/workflows/x?host=y``), else ``/``:
    a login never sends the browser to another site."""
    if not then or not then.startswith("/") or then.startswith("//") or "\\" in then:
        return "/"
    return quote(then, safe="/?&=%:@!$'()*+,;~-._")


def _segment(text: str) -> str:
    """A workflow id or promise name from a URL's path (decoded once by the server).
    A browser drops a path segment ``.`` or ``..``, written ``%2E`` / ``%2E%2E`` too, so
    the pages write those two ids encoded twice (``%252E%252E``): the segment ``%2E``
    or ``%2E%2E`` (any case) is the id ``.`` or ``..``. So that the ids ``%2E`` and
    ``%2E%2E`` are not taken for those, an id of that form (:data:`_DOTS`: ``%2E``,
    ``%252E``, ... once or twice) is written with one level more and decoded once more
    too (the id ``%2E`` is the segment ``%252E``). Every other text is itself (an id with
    ``%`` in it means what a script encoding it once sends)."""
    return unquote(text) if _DOTS.fullmatch(text) else text


#: a segment decoded once more: ``%2E``, ``%252E``, ``%25252E``, ... (any case), once or
#: twice at one level (``console.js``'s ``segment`` writes an id of this form, and the
#: ids ``.`` and ``..``, with one level of encoding more)
_DOTS = re.compile(r"%(?P<level>(?:25)*)2[Ee](?:%(?P=level)2[Ee])?")


def _checked(check: Callable[[object], str], value: object) -> str:
    """``check(value)`` (a rule of ``garrison._store_tools``, shared with the command
    line), its refusal a 400."""
    try:
        return check(value)
    except ToolError as exc:
        raise ApiError(400, str(exc)) from None


def _host(request: Request) -> str | None:
    """The ``host`` query parameter (a workflow host of the node), or ``None``."""
    return _one(request, "host") or None


def _one(request: Request, name: str) -> str | None:
    """The query parameter ``name``, one that takes a single value, or ``None``. Given
    twice (``limit=1&limit=2``) it is 400 naming it: one of the two picked would
    answer another question than the client may think it asked (``status`` and
    ``search`` repeat, and are read as lists)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"the query parameter {name!r} is given {len(values)} times: "
                            "it takes one value")
    return values[0] if values else None


async def _json(request: Request, content: Any, status_code: int = 200) -> Response:
    """A JSON answer that is valid JSON whatever the store holds (see
    :func:`~garrison._store_tools.standard_json`, as the command line's ``--json``),
    with an ``ETag``: a poll that sends it back as ``If-None-Match`` gets ``304`` and
    no body while nothing changed. Encoded and hashed in a worker thread: an answer
    may be large (2,000 journal records), and a node's event loop runs here too."""
    body, tag = await trio.to_thread.run_sync(_encode, content)
    if status_code == 200 and request.method == "GET" \
            and _none_match(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(body, status_code=status_code, media_type="application/json",
                    headers={"ETag": tag})


def _none_match(header: str | None, tag: str) -> bool:
    """Whether ``If-None-Match: header`` names ``tag`` (RFC 9110: a list of tags, each
    compared weakly, ``W/"x"`` as ``"x"``; ``*`` matches any)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    given = {t.strip().removeprefix("W/") for t in header.split(",")}
    return tag.removeprefix("W/") in given


def _encode(content: Any) -> tuple[bytes, str]:
    """The body of :func:`_json` and its ``ETag``."""
    text = standard_json(content, ensure_ascii=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, it is valid JSON
        body = standard_json(content, separators=(",", ":")).encode("ascii")
    return body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


#: the fields of each action's body, as the README's API table writes them
_FIELDS = {"topic": "str", "payload": "any", "value": "any", "message": "str"}


async def _read_body(request: Request, *, login: bool = False) -> bytes:
    """The request's body, at most :data:`MAX_BODY` bytes (the ``login`` form's:
    :data:`LOGIN_MAX_BODY`): 413 for a longer one, from its ``Content-Length`` before
    anything is read, or as the bytes arrive. A login form is refused (503) before
    anything is read while :data:`LOGINS_AT_ONCE` others are being read."""
    limit = LOGIN_MAX_BODY if login else MAX_BODY
    too_long = ApiError(413, "the login form is over 16 KiB, the console's limit" if login
                        else f"the request body is over {MAX_BODY // 1024} KiB, the "
                             "console's limit (a larger payload or value: garrison workflows "
                             "signal/resolve with - for it, reading its JSON from standard "
                             "input, or the Python API)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_long
    if not login:
        return await _read_chunks(request, too_long, limit)
    state = request.app.state
    if state.logins >= LOGINS_AT_ONCE:
        raise ApiError(503, f"the console is reading {LOGINS_AT_ONCE} login forms at "
                            "once, its limit: try again in a moment")
    state.logins += 1
    try:
        return await _read_chunks(request, too_long, limit)
    finally:
        state.logins -= 1


async def _read_chunks(request: Request, too_long: ApiError, limit: int) -> bytes:
    """The body of :func:`_read_body`, as it arrives."""
    chunks: list[bytes] = []
    size = 0
    # a body that trickles in (a byte every few seconds) would hold its connection, and
    # a descriptor of the node's, for ever: it has BODY_TIMEOUT in all
    with trio.move_on_after(BODY_TIMEOUT) as late:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_long
                chunks.append(chunk)
        except ClientDisconnect:  # (a tab closed mid-POST: nobody to answer, no error)
            raise ApiError(400, "the client closed the connection before its request "
                                "body ended") from None
    if late.cancelled_caught:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT:g}s")
    return b"".join(chunks)


async def _body(request: Request, action: str, fields: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of a POST (an empty body is ``{}``): numbers must be finite
    (no ``NaN``, ``Infinity``, ``1e400``) and text valid, as a store needs them. Its
    keys are the action's ``fields``, ``required`` among them: a key it does not take
    (a typo: ``valeu``) or a missing required one is 400 naming it, before anything is
    done (``{"valeu": 1}`` would otherwise resolve a promise with null, for good)."""
    raw = await _read_body(request)
    if not raw.strip():
        return {}
    try:
        body = strict_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = [key for key in body if key not in fields]
    missing = [key for key in required if key not in body]
    if unknown or missing:
        expected = ("{" + ", ".join(f'"{f}": {_FIELDS[f]}' for f in fields) + "}"
                    if fields else "{} or empty: it takes no fields")
        why = [f"unknown field {key!r}" for key in unknown[:5]]
        why += [f"missing field {key!r}" for key in missing]
        raise ApiError(400, f"the request body of a {action} is {expected}; got "
                            + ", ".join(why))
    return body


def _int(text: str | None, what: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    # ASCII digits only (int() takes '٣' and ' 3 '), and a long one is shown cut
    shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
    if not (text.isascii() and text.isdigit()):
        raise ApiError(400, f"{what}={shown!r}: expected a whole number")
    if len(text) > 20 or not low <= int(text) <= high:
        raise ApiError(400, f"{what}={shown}: expected {low}..{high}")
    return int(text)
