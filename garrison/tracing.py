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
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

import trio

from . import _observe

__all__ = ["disable", "enable", "enable_if_configured", "enabled"]

_INSTALL = "tracing needs OpenTelemetry: pip install 'garrison[otel]'"


def enable(tracer_provider: Any = None) -> None:
    """Make spans from now on, with ``tracer_provider`` (default: the global one, as set
    by ``opentelemetry.trace.set_tracer_provider``). ``ImportError`` without the
    ``garrison[otel]`` extra.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> garrison.tracing.enable(TracerProvider())
    """
    try:
        tracer = _OtelTracer(tracer_provider)
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc.name} is missing)") from exc
    _observe.set_tracer(tracer)


def disable() -> None:
    """Stop making spans (messages sent from now on carry no trace context)."""
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

    # ------------------------------------------------------------ messages
    def carrier(self) -> dict[str, str] | None:
        out: dict[str, str] = {}
        self._propagate.inject(out)
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
        self._context.attach(base if trace is None else self._propagate.extract(trace))

    # ------------------------------------------------------------ workflow runs
    def run_started(self, wf: Any) -> None:
        parent = self._propagate.extract(wf.trace) if wf.trace else self._context.Context()
        span = self._tracer.start_span(f"workflow {wf.name}", context=parent, attributes={
            "garrison.workflow.id": wf.wid,
            "garrison.workflow.name": wf.name,
            "garrison.workflow.run_id": wf.run_id,
            "garrison.pid": str(wf.pid),
            "garrison.workflow.replays": len(wf.cursor.entries),
        })
        ctx = self._trace.set_span_in_context(span, parent)
        token = self._context.attach(ctx)
        self._base.set((trio.lowlevel.current_task(), ctx))
        self._runs[wf] = (span, token)

    def run_ended(self, wf: Any, how: str) -> None:
        state = self._runs.pop(wf, None)
        if state is None:
            return
        span, token = state
        span.set_attribute("garrison.workflow.status", how)
        if how in ("failed", "blocked") and wf.error is not None:
            span.set_status(self._Status(self._ERROR, str(wf.error)))
        span.end()
        self._context.detach(token)

    def replayed(self, wf: Any, seconds: float) -> None:
        state = self._runs.get(wf)
        if state is not None:
            state[0].add_event("replayed", {"garrison.replay.seconds": seconds,
                                            "garrison.replay.records": len(wf.cursor.entries)})

    # ------------------------------------------------------------ spans
    @contextlib.contextmanager
    def span(self, kind: str, owner: Any, name: str,
             attributes: dict[str, Any]) -> Iterator[Any]:
        attributes["garrison.pid"] = str(owner.pid)
        wid = getattr(owner, "wid", None)
        if wid is not None:
            attributes["garrison.workflow.id"] = wid
        span = self._tracer.start_span(name, kind=self._kinds[kind], attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except Exception as exc:
            text = _observe.safe_str(exc)  # (an exception whose str() fails is still recorded)
            try:
                span.record_exception(exc)
            except Exception:
                span.add_event("exception", {"exception.type": type(exc).__name__,
                                             "exception.message": text})
            span.set_status(self._Status(self._ERROR, f"{type(exc).__name__}: {text}"))
            raise
        except BaseException:
            span.set_status(self._Status(self._ERROR, "cancelled"))
            raise
        finally:
            self._context.detach(token)
            span.end()
