"""Prometheus metrics of a running node (the ``garrison[metrics]`` extra).

:func:`collect` gives a ``prometheus_client`` registry whose collector reads the
node's own counters when it is scraped (nothing is counted twice, nothing runs on the
hot path for it); :func:`serve` answers ``GET /metrics`` with it over HTTP, from a trio
task in the caller's nursery (``garrison run CONFIG --metrics 127.0.0.1:9464`` does
this). Every metric name starts with ``garrison_``; README, "Metrics and traces",
lists them.

The latency and batch-size histograms are kept by the engine only once metrics are
asked for (:func:`collect` switches them on) and are process-wide: with several nodes
in one process they count them all. Every other figure is the node's own.

Why a trio task and not ``prometheus_client.start_http_server`` (a thread)? A scrape
reads the node's live tables (processes, inboxes, workflows); in the trio thread it
sees them consistent and needs no lock, where a thread would race the node's own
changes to those dicts. A scrape costs a few milliseconds of the trio thread.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from . import _observe
from ._bind import split_bind
from ._duration import parse_duration
from ._node import check_node, service_manager

__all__ = ["DEFAULT_BIND", "MAX_CONNECTIONS", "TIMEOUT", "MetricsAddress", "MetricsError",
           "NodeCollector", "collect", "parse_bind", "serve", "serving"]

#: where ``serve`` listens unless told otherwise (Prometheus exporters' usual port)
DEFAULT_BIND = "127.0.0.1:9464"
#: the connections ``serve`` answers at once; one more is answered ``503`` and closed
#: at once, so a client opening many cannot take the node's file descriptors
MAX_CONNECTIONS = 16
#: how long (seconds) a client may take to send its request, and to take the answer:
#: a connection that sends nothing (or reads nothing) is closed then, not kept
TIMEOUT = 10.0
#: the most a request head may have
_MAX_HEAD = 16 * 1024
#: how long (seconds) a refused connection is read out after its 503, at most
_LINGER = 2.0
#: the most read out after a 431 (a head too long), before the close
_MAX_READ_OUT = 1024 * 1024

log = logging.getLogger("garrison.metrics")

_INSTALL = "metrics need prometheus-client: pip install 'garrison[metrics]'"


def _prometheus() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc.name} is missing)") from exc
    return core


class MetricsError(OSError):
    """The metrics server cannot listen on its address (taken, or refused)."""


@attrs.frozen
class MetricsAddress:
    """Where a started metrics server answers: ``url`` of its ``/metrics`` page."""

    url: str
    host: str
    port: int


class NodeCollector:
    """A ``prometheus_client`` collector of one node's figures, read at scrape time.

    Register it in a registry of your own (``registry.register(NodeCollector(node))``),
    or let :func:`collect` make a registry for it. Once the node began to stop
    (``node.stopped``) it reports nothing: its figures are no longer the node's live
    ones (as :func:`serve` answers ``503`` then).
    """

    def __init__(self, node: Any) -> None:
        self._core = _prometheus()
        self.node = node
        _observe.set_timing(True)

    def describe(self) -> list[Any]:
        """The metric families (their names), for the registry's duplicate check."""
        return list(self.collect())

    def collect(self) -> Iterator[Any]:
        """Every metric family with its current samples (none once the node stopped)."""
        core = self._core
        gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
        node = self.node
        if node.stopped:
            return
        stats = node.stats()

        processes = gauge("garrison_processes", "Live processes by host (on a workflow "
                          "host: workflows running on this node).", labels=["host"])
        for name, host in list(node.hosts.items()):
            processes.add_metric([name], host.live_count())
        yield processes
        yield counter("garrison_messages", "Messages delivered.", value=stats["messages"])
        yield counter("garrison_dead_letters", "Messages (and events) to processes that "
                      "did not exist: dropped.", value=stats["dead_letters"])
        yield counter("garrison_spawned", "Plain processes spawned.", value=stats["spawned"])
        yield gauge("garrison_registered_names", "Registered process names.",
                    value=stats["registered"])
        yield gauge("garrison_inbox_queued", "Messages and events waiting in every process "
                    "inbox (workflows' too).", value=stats["queued"])
        yield gauge("garrison_inbox_largest", "Messages and events waiting in the fullest "
                    "process inbox.", value=stats["largest_inbox"])

        yield from self._services(service_manager(node))
        yield from self._workflows(node)
        yield from self._histograms()

    def _services(self, manager: Any) -> Iterator[Any]:
        core = self._core
        restarts = core.CounterMetricFamily(
            "garrison_service_restarts", "Restarts of each process.service since the node "
            "started: each start of it after its first (after its own failure, because a "
            "service it requires restarted, or by start_service), when it happens.",
            labels=["service"])
        status = core.GaugeMetricFamily(
            "garrison_service_status", "1 for the current status of each process.service "
            "(stopped, waiting, starting, running, backoff, completed, gave_up), 0 for the "
            "others.", labels=["service", "status"])
        if manager is not None:
            from .supervision._services import ServiceStatus

            for svc in list(manager.order):
                restarts.add_metric([svc.entry.id], svc.restarts_total)
                for each in ServiceStatus:
                    status.add_metric([svc.entry.id, each.value],
                                      1.0 if svc.status == each else 0.0)
        yield restarts
        yield status

    def _workflows(self, node: Any) -> Iterator[Any]:
        core = self._core
        starts = core.CounterMetricFamily(
            "garrison_workflow_starts", "Workflows this node started: its own starts "
            "(schedule ticks included) and those a tool created in its store, picked up "
            "while it runs or when it opened the store.", labels=["host"])
        resumes = core.CounterMetricFamily(
            "garrison_workflow_resumes", "Unfinished workflows this node resumed from its "
            "store when it opened, and in a cluster those it took over (a node that died "
            "or drained left them).", labels=["host"])
        finishes = core.CounterMetricFamily(
            "garrison_workflow_finishes", "Workflows that ended on this node, by final status "
            "(completed, failed, cancelled, blocked).", labels=["host", "status"])
        current = core.GaugeMetricFamily(
            "garrison_workflows", "Workflows in this node's memory by status (pending: "
            "waiting in its queue for a slot; running, sleeping, waiting, blocked).",
            labels=["host", "status"])
        queue = core.GaugeMetricFamily(
            "garrison_workflow_queue_pending", "Workflows waiting in the host's queue for a "
            "slot (its depth): on a cluster's store, every node's, waiting in the store "
            "(the same figure on each node: take the max, not the sum).", labels=["host"])
        transactions = core.CounterMetricFamily(
            "garrison_store_transactions", "Database transactions the store of a workflow "
            "host committed.", labels=["host"])
        store_errors = core.CounterMetricFamily(
            "garrison_workflow_store_errors", "Workflows stopped because their store "
            "refused a write for good (disk full, file gone, server refusing): blocked "
            "here with nothing recorded, they resume on the next node with a working "
            "store.", labels=["host"])
        pruned = core.CounterMetricFamily(
            "garrison_workflows_pruned", "Ended workflows this node deleted from the store "
            "of a workflow host with a retention, as they ended longer ago than it (a "
            "tool's prune is not counted).", labels=["host"])
        lapses = core.CounterMetricFamily(
            "garrison_cluster_lease_lapses", "Times this node's lease in its cluster "
            "lapsed (cut off from the store, or paused, past the lease): its workflows "
            "left it for the other nodes.", labels=["host"])
        for name, host in list(node.hosts.items()):
            if not host.durable:
                continue
            counts = host.counts
            starts.add_metric([name], counts["started"])
            resumes.add_metric([name], counts["resumed"])
            for status in ("completed", "failed", "cancelled", "blocked"):
                finishes.add_metric([name, status], counts[status])
            store_errors.add_metric([name], counts["store_errors"])
            pruned.add_metric([name], counts["pruned"])
            if "lease_lapses" in counts:  # (a host of a cluster's store)
                lapses.add_metric([name], counts["lease_lapses"])
            # active: unfinished workflows (the queue's pending ones too), and blocked
            # ones (kept until fixed code runs)
            by_status = collections.Counter(str(wf.status) for wf in list(host.active.values()))
            for status in ("pending", "running", "sleeping", "waiting", "blocked"):
                current.add_metric([name, status], by_status[status])
            queue.add_metric([name], host.queue.stats()["pending"])
            statistics = getattr(host.store, "statistics", None)
            if statistics is not None:
                transactions.add_metric([name], statistics().transactions)
        yield from (starts, resumes, finishes, current, queue, transactions, store_errors,
                    pruned, lapses)

    def _histograms(self) -> Iterator[Any]:
        core = self._core
        histogram = core.HistogramMetricFamily
        for name, doc, hist in (
            ("garrison_store_commit_seconds", "Time to write one database transaction of "
             "group commit (a thread hop included when the store writes in a thread).",
             _observe.commit_seconds),
            ("garrison_store_commit_batch_size", "commit() calls sharing one database "
             "transaction (group commit).", _observe.commit_batch_size),
            ("garrison_workflow_step_seconds", "Time a workflow waited for one durable step "
             "(its journal records) to be committed, group commit included.",
             _observe.step_seconds),
            ("garrison_workflow_replay_seconds", "Time a resumed workflow took to replay its "
             "journal up to its first live step.", _observe.replay_seconds),
        ):
            family = histogram(name, doc)
            buckets, total = hist.cumulative()
            family.add_metric([], buckets, sum_value=total)
            yield family
        activities = histogram("garrison_activity_attempt_seconds", "Duration of each "
                               "activity attempt by outcome (ok, error, cancelled: timed out "
                               "or stopped).", labels=["activity", "outcome"])
        for (activity, outcome), hist in sorted(_observe.activity_seconds.items()):
            buckets, total = hist.cumulative()
            activities.add_metric([_label(activity), outcome], buckets, sum_value=total)
        yield activities


def _label(value: str) -> str:
    """``value`` as a label value the exposition can encode: a lone surrogate (in an
    activity's ``module:qualname``, which nothing checks: host and service names are
    refused with one) is escaped (``\\ud800``), or the scrape, and every later one
    (the histograms are the process's), would fail."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def collect(node: Any, registry: Any = None) -> Any:
    """A ``prometheus_client`` registry (``registry``, or a new one) with a
    :class:`NodeCollector` of ``node``; switches the engine's latency histograms on.

    Scrape it from the trio thread (as :func:`serve` does, or a handler of your trio
    web app): the collector walks the node's live tables, which another thread (such
    as ``prometheus_client.start_http_server``'s) would race.

    A registry holds one node's metrics (they carry no node label): one that has a
    node's already (another's, or this one's) is a ``ValueError`` saying so.

    >>> text = prometheus_client.generate_latest(garrison.metrics.collect(node))
    """
    _check_running(node, "garrison.metrics.collect()")
    core = _prometheus()
    if registry is None:
        registry = core.CollectorRegistry()
    else:
        _check_registry(registry, "garrison.metrics.collect", "register")
    try:
        registry.register(NodeCollector(node))
    except ValueError:  # prometheus_client's DuplicateTimeseries: ~55 names, no reason
        raise ValueError("garrison.metrics.collect(registry=...): this registry has a "
                         "node's metrics already (another node's, or this one's): they "
                         "carry no node label, so a registry holds one node's; give each "
                         "node a registry of its own (collect(node) makes one) and serve "
                         "each apart") from None
    return registry


def _check_running(node: Any, where: str) -> None:
    """``node`` is a node (else ``TypeError``) that has not stopped: a stopped node's
    figures are no longer kept (its collector reports nothing, a server answers
    ``503``), so collecting or serving them is a ``RuntimeError`` at the call."""
    check_node(node, where)
    if node.stopped:
        raise RuntimeError(f"{where}: the node has stopped (its open_node block ended): "
                           f"it has no metrics any more")


def _check_registry(registry: Any, function: str, needs: str) -> None:
    """``registry`` (given to ``function`` as ``registry=``) has the method ``needs``
    of a prometheus_client registry (``register`` to add the collector to, ``collect``
    to serve it); else ``TypeError`` naming the argument (serving one that has not
    would fail every scrape with a ``500``)."""
    if not callable(getattr(registry, needs, None)):
        raise TypeError(f"{function}(registry=...): expected a prometheus_client "
                        f"CollectorRegistry, got {type(registry).__name__} {registry!r:.40}")


def parse_bind(bind: str, what: str = "bind") -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:9464`` for IPv6); ``ValueError``
    naming the input (and ``what`` it was given as) otherwise, ``TypeError`` for no
    string. Port 0 picks a free one."""
    return split_bind(bind, what, DEFAULT_BIND)


async def serve(node: Any, bind: str = DEFAULT_BIND, *, registry: Any = None,
                max_connections: int = MAX_CONNECTIONS, timeout: float | str = TIMEOUT,
                task_status: trio.TaskStatus[MetricsAddress] = trio.TASK_STATUS_IGNORED,
                ) -> None:
    """Serve ``GET /metrics`` (Prometheus text format) for ``node`` on ``bind`` until
    cancelled; ``task_status.started`` gives the :class:`MetricsAddress` (use it with
    ``nursery.start``). ``registry``: serve this one instead of ``collect(node)``.

    At most ``max_connections`` are answered at once: one more is answered ``503`` and
    closed at once. A client gets ``timeout`` seconds to send its request, and as
    many to take the answer; then its connection is closed.

    An address that cannot be bound raises :class:`MetricsError` (an ``OSError``)
    naming it; a node that has stopped already, ``RuntimeError``.

    >>> async with trio.open_nursery() as nursery:                  # doctest: +SKIP
    ...     where = await nursery.start(garrison.metrics.serve, node, "127.0.0.1:9464")
    ...     print(where.url)                    # http://127.0.0.1:9464/metrics
    """
    _check_running(node, "garrison.metrics.serve()")
    if registry is not None:
        _check_registry(registry, "garrison.metrics.serve", "collect")
    host, port = parse_bind(bind)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) \
            or max_connections < 1:
        raise ValueError(f"max_connections={max_connections!r}: expected a whole number >= 1")
    timeout = parse_duration(timeout, what="timeout")  # (seconds, or "10s")
    if not timeout > 0:
        raise ValueError(f"timeout={timeout!r}: expected seconds > 0")
    if registry is None:
        registry = collect(node)
    from prometheus_client.exposition import choose_encoder

    limiter = trio.CapacityLimiter(max_connections)

    def stopped() -> bool:
        return bool(getattr(node, "stopped", False))

    lingering = trio.CapacityLimiter(max_connections)  # refusals reading a request out

    async def handler(stream: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await _refuse(stream, max_connections, timeout, lingering)
            return
        try:
            await _handle(stream, registry=registry, choose_encoder=choose_encoder,
                          timeout=timeout, stopped=stopped)
        finally:
            limiter.release()

    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        error = MetricsError(f"cannot serve metrics on {bind}: {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from None
    sockname = listeners[0].socket.getsockname()
    shown = f"[{host}]" if ":" in host else host
    task_status.started(MetricsAddress(f"http://{shown}:{sockname[1]}/metrics", host,
                                       int(sockname[1])))
    await trio.serve_listeners(handler, listeners)


@asynccontextmanager
async def serving(node: Any, bind: str = DEFAULT_BIND, *,
                  max_connections: int = MAX_CONNECTIONS,
                  timeout: float | str = TIMEOUT) -> AsyncIterator[MetricsAddress]:
    """:func:`serve` for the duration of an ``async with`` block::

        async with garrison.metrics.serving(node, "127.0.0.1:9464") as where:
            ...
    """
    try:
        async with trio.open_nursery() as nursery:
            where: MetricsAddress = await nursery.start(partial(
                serve, node, bind, max_connections=max_connections, timeout=timeout))
            try:
                yield where
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the body's exception, or the server's: as is
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0],
                                                         BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


_TEXT = "text/plain; charset=utf-8"


def _scrape(registry: Any, choose_encoder: Any, accept: str | None) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of ``GET /metrics``. What one request gets wrong
    is its own answer, named: it must not end the server (nor, under ``garrison run``,
    the node that shares its nursery)."""
    try:
        encoder, ctype = choose_encoder(accept)
    except Exception as exc:  # prometheus-client raises on some Accept headers
        return 400, _TEXT, (f"the Accept header {accept!r} cannot be served: "
                            f"{type(exc).__name__}: {exc}\n").encode("utf-8", "replace")
    try:
        return 200, ctype, encoder(registry)
    except Exception as exc:  # a collector that raises (the application's own)
        log.exception("metrics: a collector failed")
        return 500, _TEXT, (f"metrics collection failed: {type(exc).__name__}: "
                            f"{exc}\n").encode("utf-8", "replace")


def _response(status: int, ctype: str, body: bytes, *, head_only: bool = False) -> bytes:
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + \
        (b"" if head_only else body)


async def _refuse(stream: trio.SocketStream, limit: int, timeout: float,
                  lingering: trio.CapacityLimiter) -> None:
    """A connection over the limit: ``503`` (without parsing its request) and closed.

    A socket closed with bytes unread (the request, which a client sends before it
    reads) is reset, and the client reads the reset, not the 503: so the refusal
    half-closes after the answer and reads the request head out (at most
    :data:`_LINGER` seconds), as long as ``lingering`` has room (as many as the
    connections answered); past that it closes at once."""
    log.debug("metrics: %d connections already: one more refused", limit)
    body = f"busy: {limit} connections already, try again\n".encode()
    try:
        with trio.move_on_after(timeout):
            await stream.send_all(_response(503, _TEXT, body))
        lingering.acquire_nowait()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.WouldBlock):
        await trio.aclose_forcefully(stream)
        return
    try:
        await _read_out(stream, min(timeout, _LINGER), until_head=True)
    finally:
        lingering.release()
        await trio.aclose_forcefully(stream)


async def _read_out(stream: trio.SocketStream, seconds: float, *,
                    until_head: bool = False) -> None:
    """After an answer: half-close, and read what the client still sends (for at most
    ``seconds``; ``until_head``: up to the end of a request head, or :data:`_MAX_HEAD`
    bytes; else up to :data:`_MAX_READ_OUT`) before the caller closes. A socket closed
    with bytes unread is reset, and the client would read the reset, not the answer."""
    try:
        await stream.send_eof()
        tail, read = b"", 0
        limit = _MAX_HEAD if until_head else _MAX_READ_OUT
        with trio.move_on_after(seconds):
            while not (until_head and b"\r\n\r\n" in tail) and read < limit:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                read += len(chunk)
                tail = tail[-3:] + chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


def _head_ended(head: bytes) -> bool:
    """Whether ``head`` holds a request head's end (its blank line, CRLF or bare LF)."""
    return b"\r\n\r\n" in head or b"\n\n" in head


async def _handle(stream: trio.SocketStream, *, registry: Any, choose_encoder: Any,
                  timeout: float = TIMEOUT, stopped: Any = lambda: False) -> None:
    """One HTTP/1.x request, answered and closed (``timeout`` seconds to send the
    request, as many to take the answer). A head over :data:`_MAX_HEAD` is answered
    ``431`` and read out before the close (else the client reads a reset, not the
    answer); once the node ``stopped()``, ``/metrics`` is ``503``."""
    try:
        head = b""
        with trio.move_on_after(timeout) as waited:
            while not _head_ended(head) and len(head) < _MAX_HEAD:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        ended = _head_ended(head)
        if waited.cancelled_caught and not ended:
            # its time ran out before its request ended: said, not answered
            body = f"no complete request within {timeout:g}s\n".encode()
            with trio.move_on_after(timeout):
                await stream.send_all(_response(408, _TEXT, body))
            await _read_out(stream, min(timeout, _LINGER))
            return
        # (lines may end in a bare LF, which RFC 9112 lets a server take)
        text = head.decode("latin-1").replace("\r\n", "\n")
        lines = text.split("\n\n", 1)[0].split("\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if not ended and len(head) >= _MAX_HEAD:
            status, ctype = 431, _TEXT
            body = f"request head over {_MAX_HEAD} bytes\n".encode()
            with trio.move_on_after(timeout):
                await stream.send_all(_response(status, ctype, body))
            await _read_out(stream, min(timeout, _LINGER))
            return
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, body, ctype = 400, b"bad request\n", _TEXT
        elif not ended:  # (the client closed its side before the end)
            status, ctype = 400, _TEXT
            body = b"bad request: the request head ended before its blank line\n"
        elif parts[0] not in ("GET", "HEAD"):
            status, body, ctype = 405, b"only GET\n", "text/plain; charset=utf-8"
        else:
            path = parts[1].split("?", 1)[0]
            if path == "/metrics" and stopped():
                status, ctype = 503, _TEXT
                body = b"the node these metrics are of has stopped\n"
            elif path == "/metrics":
                status, ctype, body = _scrape(registry, choose_encoder, headers.get("accept"))
            elif path == "/":
                status, ctype = 200, "text/html; charset=utf-8"
                body = b'<html><body><a href="/metrics">garrison metrics</a></body></html>\n'
            else:
                status, body, ctype = 404, b"not found: try /metrics\n", \
                    "text/plain; charset=utf-8"
        with trio.move_on_after(timeout):  # a client that reads nothing is let go
            await stream.send_all(_response(status, ctype, body,
                                            head_only=parts[0] == "HEAD"))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away
    finally:
        await trio.aclose_forcefully(stream)
