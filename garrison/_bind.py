"""``HOST:PORT`` addresses to serve on (the console's ``bind``, ``--metrics``): one
reading, so that both refuse the same malformed ones before anything starts."""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = ["bind_problems", "split_bind"]


def bind_problems(addresses: list[tuple[str, str, int, str]]) -> str | None:
    """Why one of ``addresses`` (``(what, host, port, server)``: ``what`` as the error
    names it, ``"the console on 127.0.0.1:8233"``; ``server`` how it binds, ``"trio"``
    or ``"hypercorn"``) cannot be served now, or ``None``: each is bound and listened
    on for a moment, all at once, as its server will bind it, before a command starts
    anything, so that its workflows and services do not run for a node that then exits
    2. It finds an address another socket listens on, a host name that does not
    resolve, an address no interface of this machine has, and two of ``addresses``
    that take the same one (``--ui`` and ``--metrics`` on one port). The server's own
    bind still decides (another program may take the port in between)."""
    held: list[socket.socket] = []
    try:
        for what, host, port, server in addresses:
            try:
                trials = _trials(host, port, server)
            except OSError as exc:  # (gaierror: "Name or service not known")
                return f"cannot serve {what}: {exc.strerror or exc}"
            for family, v6only, address in trials:
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as exc:
                    if exc.errno == errno.EAFNOSUPPORT:
                        continue  # (IPv6 off in this kernel: trio skips it too)
                    return f"cannot serve {what}: {exc.strerror or exc}"
                held.append(sock)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if v6only:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
                    sock.listen(1)
                except OSError as exc:
                    said = exc.strerror or str(exc)
                    if exc.errno == errno.EADDRINUSE and any(
                            w != what and (h, p) == (host, port)
                            for w, h, p, _s in addresses):
                        said += " (given to another option of this command too)"
                    return f"cannot serve {what}: {said}"
        return None
    finally:
        for sock in held:
            sock.close()


def _trials(host: str, port: int, server: str) -> list[tuple[int, bool, Any]]:
    """``(family, v6only, address)`` of each socket ``server`` binds for ``host:port``:
    trio's listeners one per address the name resolves to (IPv6 ones only for IPv6),
    hypercorn one socket, IPv6 if the host has a colon, bound to the name itself."""
    if server == "hypercorn":
        return [(socket.AF_INET6 if ":" in host else socket.AF_INET, False, (host, port))]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    out: list[tuple[int, bool, Any]] = []
    for family, _kind, _proto, _name, address in infos:
        trial = (family, family == socket.AF_INET6, address)
        if trial not in out:
            out.append(trial)
    return out


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
