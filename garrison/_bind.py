"""``HOST:PORT`` addresses to serve on (the console's ``bind``, ``--metrics``): one
reading, so that both refuse the same malformed ones before anything starts."""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = ["address_taken", "split_bind"]


def address_taken(host: str, port: int) -> str | None:
    """The system's reason (``Address already in use``) if another socket listens on
    ``host:port`` now, else ``None``: checked before a command starts anything, so that
    a taken address stops it before its workflows or services run (the server's own
    bind still decides; another error, such as a name that does not resolve, is left
    to it)."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return exc.strerror or "Address already in use"
    return None


def split_bind(bind: Any, what: str, example: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:9464`` for IPv6: the host without its
    brackets); port 0 picks a free one. ``TypeError`` for a value that is no string,
    ``ValueError`` for a malformed one (a space, a second colon outside brackets,
    brackets around no IPv6 address), both naming ``what`` (``--metrics``, ``bind``).

    >>> split_bind("[::1]:0", "bind", "127.0.0.1:9464")
    ('::1', 0)
    """
    if not isinstance(bind, str):
        raise TypeError(f"{what}: expected 'HOST:PORT' as a string, e.g. {example!r}, got "
                        f"{type(bind).__name__} {bind!r:.40}")
    host, sep, port_text = bind.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        host_ok = ":" in inner and not any(c in "[]" or c.isspace() for c in inner)
    else:
        inner = host
        host_ok = bool(host) and not any(c in "[]:" or c.isspace() for c in host)
    if not sep or not host_ok or not (port_text.isascii() and port_text.isdigit()) \
            or int(port_text) > 65535:
        raise ValueError(f"{what} {bind!r}: expected HOST:PORT, e.g. {example} (an IPv6 "
                         "address in brackets, [::1]:PORT; port 0 picks a free one)")
    return inner, int(port_text)
