"""The web console: ``garrison ui --store S`` and ``garrison run CONFIG --ui ADDRESS``.

Needs the ``garrison[ui]`` extra (Starlette, Hypercorn, Jinja2). See README.md, "Web
console", for the pages, the JSON API under ``/api/`` and the security rules.
"""

from ._serve import (
    DEFAULT_BIND,
    ConsoleAddress,
    ConsoleError,
    check_bind,
    check_sessions,
    serve_console,
)

__all__ = ["DEFAULT_BIND", "ConsoleAddress", "ConsoleError", "check_bind", "check_sessions",
           "serve_console"]
