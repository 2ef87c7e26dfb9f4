"""``HOST:PORT`` addresses to serve on (the console's ``bind``, ``--metrics``): one
reading, so that both refuse the same malformed ones before anything starts."""

from __future__ import annotations

from typing import Any

__all__ = ["split_bind"]


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
