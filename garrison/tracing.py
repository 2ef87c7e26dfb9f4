"""OpenTelemetry traces of workflow runs, activity attempts, calls and store commits.

Needs ``opentelemetry-api`` (``pip install 'garrison[otel]'``); which SDK and exporter
record the spans is the application's choice. A node turns tracing on when it opens
if the application has set a tracer provider by then
(``opentelemetry.trace.set_tracer_provider``); :func:`enable` does it explicitly.
Without OpenTelemetry installed, or with no provider set, nothing is imported and no
span is made.

Spans (see README, "Metrics and traces"): ``workflow <name>`` for each run of a
workflow on a node, ``activity <name>`` for each attempt, ``call <topic>`` for each
``process.call`` / ``node.call`` made live, and ``store.commit`` for each commit of a
workflow. A message carries the trace context current where it was sent; a process or
workflow that takes it from its inbox makes that context its current one.

What the application's OpenTelemetry code raises (a span processor, an exporter it
calls in line, a propagator) is caught where garrison calls it: tracing must never end
a workflow, a process or the node (nor pass for a store failure, as a ``store.commit``
span's end would). The work goes on without that span or context, and the failure is
logged on ``garrison.tracing``, once per kind (what was being done, and the exception's
type) for each :func:`enable`: at full speed it would fail at every span.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Any

import trio

from . import _observe

__all__ = ["disable", "enable", "enable_if_configured", "enabled"]

_INSTALL = "tracing needs OpenTelemetry: pip install 'garrison[otel]'"

log = logging.getLogger("garrison.tracing")

#: the global tracer provider :func:`disable` was called under: a node that opens does
#: not turn tracing on again with it (a provider set after that, it does)
_declined: Any = None


def enable(tracer_provider: Any = None) -> None:
    """Make spans from now on, with ``tracer_provider`` (default: the global one, as set
    by ``opentelemetry.trace.set_tracer_provider``). ``ImportError`` without the
    ``garrison[otel]`` extra.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> garrison.tracing.enable(TracerProvider())
    """
    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer",
                                                             None)):
        raise TypeError(f"garrison.tracing.enable(tracer_provider=...): expected an "
                        f"OpenTelemetry TracerProvider (or None: the global one), got "
                        f"{type(tracer_provider).__name__} {tracer_provider!r:.40}")
    try:
        tracer = _OtelTracer(tracer_provider)
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc.name} is missing)") from exc
    global _declined
    _declined = None
    _observe.set_tracer(tracer)


def disable() -> None:
    """Stop making spans (messages sent from now on carry no trace context), also past
    the next node's open: a node that opens turns tracing on again only with a global
    tracer provider set after this call (or :func:`enable` does)."""
    global _declined
    trace = sys.modules.get("opentelemetry.trace")
    _declined = None if trace is None else trace.get_tracer_provider()
    _observe.set_tracer(None)


def enabled() -> bool:
    """True while spans are made."""
    return _observe.tracing


def enable_if_configured() -> bool:
    """Enable tracing if the application has set an OpenTelemetry tracer provider (a
    node calls this as it opens); True if tracing is on. Imports nothing: an
    application that sets a provider has imported ``opentelemetry.trace`` already."""
    if _observe.tracing:
        return True
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False  # nothing set: spans would be dropped anyway
    if provider is _declined:
        return False  # the application turned it off under this provider
    enable(provider)
    return True


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("garrison")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "0"


class _OtelTracer(_observe.Tracer):
    """:class:`garrison._observe.Tracer` with OpenTelemetry spans."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._context = context
        self._propagate = propagate
        self._trace = trace
        self._kinds = {"call": SpanKind.CLIENT, "activity": SpanKind.INTERNAL,
                       "commit": SpanKind.INTERNAL}
        self._Status = Status
        self._ERROR = StatusCode.ERROR
        if provider is None:
            provider = trace.get_tracer_provider()
        self._tracer = provider.get_tracer("garrison", _version())
        #: running workflows -> (their run span, the token that made it current)
        self._runs: dict[Any, tuple[Any, Any]] = {}
        #: per task: ``(the task, the context to go back to when a message carries
        #: none)`` (a process: the one it had before its first traced message; a
        #: workflow: its run span). The task is kept because a task spawned by this one
        #: inherits the variable: its own start context is what it goes back to.
        self._base: contextvars.ContextVar[tuple[Any, Any]] = \
            contextvars.ContextVar("garrison_trace_base")
        #: ``(what was being done, exception type)`` of the failures logged already
        self._failures: set[tuple[str, type]] = set()

    def _failed(self, doing: str, exc: Exception) -> None:
        """The application's OpenTelemetry code raised ``exc`` while ``doing``: logged
        (once per kind: a broken exporter would fail at every span), and the work goes
        on without that span or context (see the module's doc)."""
        key = (doing, type(exc))
        if key in self._failures:
            return
        self._failures.add(key)
        log.error("tracing error: %s raised %s: %s; the work goes on without it (logged "
                  "once for each kind of failure)", doing, type(exc).__name__,
                  _observe.safe_str(exc), exc_info=exc)

    # ------------------------------------------------------------ messages
    def carrier(self) -> dict[str, str] | None:
        out: dict[str, str] = {}
        try:
            self._propagate.inject(out)
        except Exception as exc:
            self._failed("injecting a message's trace context (the propagator)", exc)
            return None
        return out or None

    def adopt(self, trace: dict[str, str] | None) -> None:
        task = trio.lowlevel.current_task()
        mine = self._base.get(None)
        if mine is not None and mine[0] is task:
            base = mine[1]
        else:  # nothing adopted in this task yet (a spawner's entry is not its own)
            if trace is None:
                return  # nothing to go back from
            base = self._context.get_current()
            self._base.set((task, base))
        self._context.attach(base if trace is None else self._extract(trace, base))

    def _extract(self, trace: dict[str, str], default: Any) -> Any:
        """The context ``trace`` carries; ``default`` if the propagator raises."""
        try:
            return self._propagate.extract(trace)
        except Exception as exc:
            self._failed("extracting a trace context (the propagator)", exc)
            return default

    def _start(self, name: str, **options: Any) -> Any:
        """A new span (``None`` if the tracer or a span processor raises)."""
        try:
            return self._tracer.start_span(name, **options)
        except Exception as exc:
            self._failed("starting a span (a span processor)", exc)
            return None

    # ------------------------------------------------------------ workflow runs
    def run_started(self, wf: Any) -> None:
        parent = self._context.Context()
        if wf.trace:
            parent = self._extract(wf.trace, parent)
        span = self._start(f"workflow {wf.name}", context=parent, attributes={
            "garrison.workflow.id": wf.wid,
            "garrison.workflow.name": wf.name,
            "garrison.workflow.run_id": wf.run_id,
            "garrison.pid": str(wf.pid),
            "garrison.workflow.replays": len(wf.cursor.entries),
        })
        ctx = parent if span is None else self._trace.set_span_in_context(span, parent)
        token = self._context.attach(ctx)
        self._base.set((trio.lowlevel.current_task(), ctx))
        self._runs[wf] = (span, token)

    def run_ended(self, wf: Any, how: str) -> None:
        state = self._runs.pop(wf, None)
        if state is None:
            return
        span, token = state
        try:
            if span is not None:
                span.set_attribute("garrison.workflow.status", how)
                if how in ("failed", "blocked") and wf.error is not None:
                    span.set_status(self._Status(self._ERROR, str(wf.error)))
                span.end()
        except Exception as exc:
            self._failed("ending a span (a span processor)", exc)
        finally:
            self._context.detach(token)

    def replayed(self, wf: Any, seconds: float) -> None:
        state = self._runs.get(wf)
        if state is None or state[0] is None:
            return
        try:
            state[0].add_event("replayed", {"garrison.replay.seconds": seconds,
                                            "garrison.replay.records": len(wf.cursor.entries)})
        except Exception as exc:
            self._failed("adding an event to a span", exc)

    # ------------------------------------------------------------ spans
    @contextlib.contextmanager
    def span(self, kind: str, owner: Any, name: str,
             attributes: dict[str, Any]) -> Iterator[Any]:
        attributes["garrison.pid"] = str(owner.pid)
        wid = getattr(owner, "wid", None)
        if wid is not None:
            attributes["garrison.workflow.id"] = wid
        span = self._start(name, kind=self._kinds[kind], attributes=attributes)
        if span is None:  # (the block runs all the same, in no span of its own)
            yield None
            return
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except Exception as exc:
            self._record(span, exc)
            raise
        except BaseException:
            try:
                span.set_status(self._Status(self._ERROR, "cancelled"))
            except Exception as failed:
                self._failed("recording an error on a span", failed)
            raise
        finally:
            self._context.detach(token)
            try:
                span.end()
            except Exception as exc:
                self._failed("ending a span (a span processor)", exc)

    def _record(self, span: Any, exc: Exception) -> None:
        """``exc`` on ``span``: the exception and an error status."""
        text = _observe.safe_str(exc)  # (an exception whose str() fails is still recorded)
        try:
            try:
                span.record_exception(exc)
            except Exception:
                span.add_event("exception", {"exception.type": type(exc).__name__,
                                             "exception.message": text})
            span.set_status(self._Status(self._ERROR, f"{type(exc).__name__}: {text}"))
        except Exception as failed:
            self._failed("recording an error on a span", failed)
