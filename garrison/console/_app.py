"""The console as an ASGI application (Starlette): three pages and the JSON API.

The pages are small Jinja2 skeletons (autoescaped); ``static/console.js`` fills them
from the JSON API and builds every element with ``textContent`` (never ``innerHTML``
with data), polling while something can change. The API is documented in README.md
("Web console").
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import _store_tools as tools
from ._backend import ApiError, Backend, parse_statuses
from ._security import (
    CSRF_COOKIE,
    Guard,
    csrf_cookie_args,
    session_cookie_args,
)

__all__ = ["make_app"]

_HERE = Path(__file__).parent
#: workflows on one page of the list, by default and at most
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def make_app(backend: Backend, *, token: str | None = None, loopback: bool = True) -> Guard:
    """The console's ASGI application over ``backend``, behind its :class:`Guard`
    (``token``: required on every request; ``loopback``: answer loopback names only)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                             autoescape=True)
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, **context: Any) -> Response:
        response = templates.TemplateResponse(
            request, name, {"live": backend.live, "store": backend.store.path, **context})
        if not request.cookies.get(CSRF_COOKIE):
            response.set_cookie(**csrf_cookie_args(secrets.token_urlsafe(24)))
        return response

    # -- pages ---------------------------------------------------------------------------
    async def list_page(request: Request) -> Response:
        return page(request, "list.html", title="Workflows")

    async def workflow_page(request: Request) -> Response:
        return page(request, "workflow.html", title=request.path_params["wid"],
                    workflow_id=request.path_params["wid"])

    async def node_page(request: Request) -> Response:
        return page(request, "node.html", title="Node")

    async def login_page(request: Request) -> Response:
        guard: Guard = request.scope["state"]["guard"]
        if request.method == "POST":
            # a urlencoded form of one field (no multipart parser needed)
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            given = form.get("token", [""])[0]
            if given and guard.token_matches(given):
                return _logged_in(guard.new_session())
            return templates.TemplateResponse(request, "login.html",
                                              {"title": "Log in", "failed": True,
                                               "anonymous": True},
                                              status_code=401)
        return templates.TemplateResponse(request, "login.html",
                                          {"title": "Log in", "failed": False,
                                           "anonymous": True})

    async def auth(request: Request) -> Response:
        guard: Guard = request.scope["state"]["guard"]
        session = guard.use_code(request.query_params.get("code", ""))
        if session is None:
            return Response("This login link is not valid (it works once). Log in with the "
                            "console's token at /login.\n", status_code=403,
                            media_type="text/plain")
        return _logged_in(session)

    # -- the JSON API --------------------------------------------------------------------
    async def api_capabilities(request: Request) -> Response:
        return JSONResponse(backend.capabilities())

    async def api_workflows(request: Request) -> Response:
        q = request.query_params
        statuses = parse_statuses(q.getlist("status"))
        try:
            search = dict(tools.key_value(item, "search") for item in q.getlist("search"))
        except tools.ToolError as exc:
            raise ApiError(400, str(exc)) from None
        limit = _int(q.get("limit"), "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        order = q.get("order", "newest")
        if order not in ("newest", "oldest"):
            raise ApiError(400, f"order={order!r}: expected 'newest' or 'oldest'")
        return JSONResponse(backend.list_page(statuses, search, q.get("id") or None,
                                              q.get("after") or None, limit,
                                              newest_first=order == "newest"))

    async def api_workflow(request: Request) -> Response:
        return JSONResponse(await backend.detail(request.path_params["wid"]))

    async def api_signal(request: Request) -> Response:
        wid = request.path_params["wid"]
        body = await _body(request)
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ApiError(400, "a signal needs a 'topic': a non-empty string")
        out = await backend.signal(wid, topic, body.get("payload"))
        return JSONResponse({"ok": True, "workflow_id": wid, "signal": topic, **out})

    async def api_resolve(request: Request) -> Response:
        wid, name = request.path_params["wid"], request.path_params["name"]
        body = await _body(request)
        await backend.resolve(wid, name, body.get("value"))
        return JSONResponse({"ok": True, "workflow_id": wid, "promise": name,
                             "resolved": body.get("value")})

    async def api_reject(request: Request) -> Response:
        wid, name = request.path_params["wid"], request.path_params["name"]
        body = await _body(request)
        message = body.get("message")
        if not isinstance(message, str) or not message:
            raise ApiError(400, "a rejection needs a 'message': a non-empty string")
        await backend.reject(wid, name, message)
        return JSONResponse({"ok": True, "workflow_id": wid, "promise": name,
                             "rejected": message})

    async def api_cancel(request: Request) -> Response:
        wid = request.path_params["wid"]
        await _body(request)
        await backend.cancel(wid)
        return JSONResponse({"ok": True, "workflow_id": wid, "cancel_requested": True})

    async def api_retry(request: Request) -> Response:
        wid = request.path_params["wid"]
        await _body(request)
        note = await backend.retry(wid)
        return JSONResponse({"ok": True, "workflow_id": wid, "retry": note})

    async def api_node(request: Request) -> Response:
        return JSONResponse(backend.node_view())

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

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
        Route("/api/capabilities", api_capabilities),
        Route("/api/workflows", api_workflows),
        Route("/api/node", api_node),
        # actions first: a workflow id may itself contain "/"
        Route(wid + "/signal", api_signal, methods=["POST"]),
        Route(wid + "/promises/{name}/resolve", api_resolve, methods=["POST"]),
        Route(wid + "/promises/{name}/reject", api_reject, methods=["POST"]),
        Route(wid + "/cancel", api_cancel, methods=["POST"]),
        Route(wid + "/retry", api_retry, methods=["POST"]),
        Route(wid, api_workflow),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: api_error,
                                                       HTTPException: http_error})
    return Guard(app, token=token, loopback=loopback)


def _logged_in(session: str) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(**session_cookie_args(session))
    return response


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object of a POST (an empty body is ``{}``)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _int(text: str | None, what: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{what}={text!r}: expected a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{what}={value}: expected {low}..{high}")
    return value
