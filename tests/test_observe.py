"""Metrics and traces: OpenTelemetry spans captured by the SDK's in-memory exporter,
the Prometheus collector of a node, and the zero-cost guarantee without the extras."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import observe_app
import ops_app
import pytest
import trio
from opentelemetry.propagators.textmap import default_getter, default_setter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import garrison
from garrison import _observe
from garrison.actors import Message, Pid

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter; off again after the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe_app.TRACER = provider.get_tracer("test")
    observe_app.add_one_failures.clear()
    garrison.tracing.enable(provider)
    try:
        yield exporter
    finally:
        garrison.tracing.disable()


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# ------------------------------------------------------------------ traces
async def test_a_call_chain_process_workflow_process_is_one_trace(
        spans: InMemorySpanExporter, autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.spawn(observe_app.backend)
        await trio.sleep(0.1)
        pid = await node.spawn(observe_app.frontend)
        assert await node.wait(pid) == 84
    named = by_name(spans)
    request, = named["frontend.request"]
    run, = named["workflow observe_app:middle"]
    call_mid, = named["call compute"]
    attempts = named["activity observe_app:add_one"]
    call_backend, = named["call double"]
    work, = named["backend.work"]
    commits = named["store.commit"]
    chain = [request, run, call_mid, *attempts, call_backend, work, *commits]
    assert {s.context.trace_id for s in chain} == {request.context.trace_id}
    # who is whose parent: the workflow adopted the caller's span when it received the
    # call, so its activity and its own call are children of that call's span, and the
    # backend's span is a child of the workflow's call
    assert parent_id(run) == request.context.span_id  # started inside the request
    assert parent_id(call_mid) == request.context.span_id
    assert [parent_id(a) for a in attempts] == [call_mid.context.span_id] * 2
    assert parent_id(call_backend) == call_mid.context.span_id
    assert parent_id(work) == call_backend.context.span_id
    # the attributes: workflow id and pid everywhere a workflow acts
    assert run.attributes is not None and dict(run.attributes) == {
        "garrison.workflow.id": "mid", "garrison.workflow.name": "observe_app:middle",
        "garrison.workflow.run_id": run.attributes["garrison.workflow.run_id"],
        "garrison.pid": "workflows/mid", "garrison.workflow.replays": 0,
        "garrison.workflow.status": "completed"}
    first, second = sorted(attempts, key=lambda s: s.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["garrison.activity.attempt"],
            second.attributes["garrison.activity.attempt"]) == (1, 2)
    assert first.attributes["garrison.workflow.id"] == "mid"
    assert first.attributes["garrison.pid"] == "workflows/mid"
    assert first.status.status_code.name == "ERROR" and first.events[0].name == "exception"
    assert second.status.status_code.name == "UNSET"
    assert call_backend.attributes is not None and call_mid.attributes is not None
    assert call_backend.attributes["garrison.workflow.id"] == "mid"
    assert str(call_backend.attributes["garrison.call.to"]).startswith("processes/")
    assert call_mid.attributes["garrison.call.to"] == "workflows/mid"
    assert call_mid.attributes["garrison.call.topic"] == "compute"
    assert call_mid.kind.name == "CLIENT"
    assert all(c.attributes is not None and c.attributes["garrison.workflow.id"] == "mid"
               and c.attributes["garrison.commit.operations"] >= 1 for c in commits)


async def test_spans_opened_in_a_thread_activity_are_children_of_its_attempt(
        spans: InMemorySpanExporter) -> None:
    async with garrison.open_node() as node:
        await node.start_workflow(observe_app.uses_sync_step, 1, id="sync")
        assert await node.workflow("sync").result() == 2
    named = by_name(spans)
    attempt, = named["activity observe_app:sync_step"]
    work, = named["sync_step.work"]
    assert parent_id(work) == attempt.context.span_id


def test_a_workflow_started_through_the_asyncio_bridge_joins_the_callers_trace(
        spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-326: a workflow started through examples/asyncio_app.py's
    ``NodeThread.call`` inside an asyncio handler's span was the root of a trace of its
    own (the call ran in trio's entry-queue task's context); it is now the span's child,
    as with ``trio.from_thread.run``."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import asyncio_app

    async def main() -> None:
        runner = asyncio_app.NodeThread(store=None)
        node = runner.start()

        async def place() -> int:
            await node.start_workflow(observe_app.uses_sync_step, 1, id="a")
            return int(await node.workflow("a").result())

        try:
            with observe_app.TRACER.start_as_current_span("handler"):
                assert await runner.call(place) == 2
        finally:
            runner.stop()

    asyncio.run(main())
    named = by_name(spans)
    handler, = named["handler"]
    run, = named["workflow observe_app:uses_sync_step"]
    assert parent_id(run) == handler.context.span_id


async def test_a_failed_call_is_an_error_span(spans: InMemorySpanExporter,
                                              autojump_clock: Any) -> None:
    async def silent() -> None:
        await trio.sleep_forever()

    async with garrison.open_node() as node:
        pid = await node.spawn(silent)
        with pytest.raises(TimeoutError):
            await node.call(pid, "hello", timeout="1s")
    span, = by_name(spans)["call hello"]
    assert span.status.status_code.name == "ERROR"
    assert "TimeoutError" in (span.status.description or "")


async def test_a_process_takes_the_context_of_the_message_it_handles(
        spans: InMemorySpanExporter, autojump_clock: Any) -> None:
    tracer = observe_app.TRACER
    seen: list[int] = []

    async def handler() -> None:
        from opentelemetry import trace

        async for _msg in garrison.process.inbox():
            seen.append(trace.get_current_span().get_span_context().trace_id)

    async with garrison.open_node() as node:
        pid = await node.spawn(handler)
        with tracer.start_as_current_span("one") as one:
            await node.send(pid, "a")
        await node.send(pid, "b")  # sent outside any span: back to the start context
        with tracer.start_as_current_span("two") as two:
            await node.send(pid, "c")
        await trio.sleep(1)
    assert seen == [one.get_span_context().trace_id, 0, two.get_span_context().trace_id]


async def test_an_untraced_message_brings_a_spawned_process_back_to_its_own_start(
        spans: InMemorySpanExporter, autojump_clock: Any) -> None:
    # a process spawned while its spawner handled a traced message starts in that
    # message's context; a message sent outside any span brings it back there, not to
    # the context its spawner had before *its* first traced message (the spawner's
    # own fallback, which the child inherited with the rest of the spawner's context)
    from opentelemetry import trace

    tracer = observe_app.TRACER
    seen: list[int] = []

    async def child() -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        await garrison.process.inbox().receive()
        seen.append(trace.get_current_span().get_span_context().trace_id)

    async def parent() -> None:
        await garrison.process.inbox().receive()
        await garrison.process.spawn(child)
        await trio.sleep_forever()

    async with garrison.open_node() as node:
        pid = await node.spawn(parent)
        with tracer.start_as_current_span("one") as one:
            await node.send(pid, "spawn")
        await trio.sleep(1)
        children = [info.pid for info in node.processes() if info.parent == pid]
        await node.send(children[0], "plain")  # outside any span
        await trio.sleep(1)
    assert seen == [one.get_span_context().trace_id] * 2


async def test_try_receive_takes_the_context_too(spans: InMemorySpanExporter,
                                                autojump_clock: Any) -> None:
    tracer = observe_app.TRACER

    async def poller() -> None:
        await trio.sleep(1)
        assert garrison.process.inbox().try_receive() is not None
        with tracer.start_as_current_span("poller.work"):
            pass

    async with garrison.open_node() as node:
        pid = await node.spawn(poller)
        wf = await node.start_workflow(observe_app.try_then_act, id="t")
        with tracer.start_as_current_span("sender") as sender:
            await node.send(pid, "go")
            await node.send(wf, "go", 1)
        assert await node.workflow("t").result() == 2
        await node.wait(pid)
    named = by_name(spans)
    assert parent_id(named["poller.work"][0]) == sender.get_span_context().span_id
    assert parent_id(named["activity observe_app:add_one"][0]) == \
        sender.get_span_context().span_id


async def test_a_resumed_workflow_joins_the_traces_it_belongs_to(
        spans: InMemorySpanExporter, tmp_path: Path, autojump_clock: Any) -> None:
    tracer = observe_app.TRACER
    path = tmp_path / "store.db"
    async with garrison.open_node(store=path) as node:
        with tracer.start_as_current_span("starter") as starter:
            await node.start_workflow(observe_app.sleeper, id="s")
        with tracer.start_as_current_span("sender") as sender:
            await node.send("workflows/s", "work", 1)  # waits in the durable inbox
        await trio.sleep(60)  # the workflow sleeps (1h): the node closes meanwhile
    assert [s.name for s in spans.get_finished_spans()].count("workflow observe_app:sleeper") == 1
    async with garrison.open_node(store=path) as node:
        assert await node.workflow("s").result() == 2
    runs = by_name(spans)["workflow observe_app:sleeper"]
    assert len(runs) == 2
    assert {s.context.trace_id for s in runs} == {starter.get_span_context().trace_id}
    assert {parent_id(s) for s in runs} == {starter.get_span_context().span_id}
    assert [s.attributes and s.attributes["garrison.workflow.status"] for s in runs] == \
        ["suspended", "completed"]
    assert runs[1].attributes is not None and runs[1].attributes["garrison.workflow.replays"] == 1
    assert [e.name for e in runs[1].events] == ["replayed"]
    attempt, = by_name(spans)["activity observe_app:add_one"]
    # the message waited in the store across the restart with its trace context
    assert attempt.context.trace_id == sender.get_span_context().trace_id
    assert parent_id(attempt) == sender.get_span_context().span_id


async def test_a_resume_that_diverges_never_caught_up(
        spans: InMemorySpanExporter, tmp_path: Path, autojump_clock: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # it got a ``replayed`` event and a replay time when its run ended, though it
    # stopped (blocked) before its live point
    monkeypatch.setattr(_observe, "timing", True)
    path = tmp_path / "store.db"
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(observe_app.changes, id="c")
        await trio.sleep(60)  # asleep (1h): the node closes meanwhile
    monkeypatch.setattr(observe_app, "CHANGED", True)
    replays = _observe.replay_seconds.cumulative()[0][-1][1]
    async with garrison.open_node(store=path) as node:
        while node.workflow("c").status() != "blocked":
            await trio.sleep(1)
    runs = by_name(spans)["workflow observe_app:changes"]
    assert [s.attributes and s.attributes["garrison.workflow.status"] for s in runs] == \
        ["suspended", "blocked"]
    assert [e.name for e in runs[1].events] == []
    assert _observe.replay_seconds.cumulative()[0][-1][1] == replays


async def test_a_replayed_receive_restores_the_context_of_its_message(
        spans: InMemorySpanExporter, tmp_path: Path, autojump_clock: Any) -> None:
    tracer = observe_app.TRACER
    path = tmp_path / "store.db"
    async with garrison.open_node(store=path) as node:
        await node.start_workflow(observe_app.receive_then_sleep, id="r")
        with tracer.start_as_current_span("sender") as sender:
            await node.send("workflows/r", "work", 1)
        await trio.sleep(60)  # received (journaled with its trace context), now asleep
    async with garrison.open_node(store=path) as node:
        assert await node.workflow("r").result() == 2
    attempt, = by_name(spans)["activity observe_app:add_one"]
    assert parent_id(attempt) == sender.get_span_context().span_id


def test_a_version_2_store_gets_the_trace_columns(tmp_path: Path) -> None:
    from garrison.persistence import SQLiteStore, Transaction

    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:  # made like a store of schema version 2
        conn = store.db.conn
        for table in ("inbox", "workflows"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN trace")
        conn.execute("DROP TABLE queue")  # and what version 4 added
        conn.execute("DROP TABLE schedules")
        conn.execute("DELETE FROM schema_version WHERE version >= 3")
        conn.execute("INSERT INTO workflows (workflow_id, name, status, input, created, "
                     "updated) VALUES ('w', 'm:f', 'running', '[]', 1, 1)")
        conn.execute("INSERT INTO inbox (workflow_id, msg_id, topic, payload, kind, created) "
                     "VALUES ('w', 'm-1', 't', '1', 'message', 1)")
    with SQLiteStore(path) as store:
        assert store.get_workflow("w").trace is None  # type: ignore[union-attr]
        assert [r.trace for r in store.pending_messages("w")] == [None]
        store.write(Transaction().deliver("w", "t", 2, msg_id="m-2",
                                          trace={"traceparent": "00-ab-cd-01"}))
        assert [r.trace for r in store.pending_messages("w")] == \
            [None, {"traceparent": "00-ab-cd-01"}]


async def test_continue_as_new_gets_a_span_per_run(spans: InMemorySpanExporter,
                                                   autojump_clock: Any) -> None:
    async with garrison.open_node() as node:
        await node.start_workflow(observe_app.counter, 2, id="c")
        assert await node.workflow("c").result() == 1
    runs = by_name(spans)["workflow observe_app:counter"]
    assert [s.attributes and s.attributes["garrison.workflow.status"] for s in runs] == \
        ["continued", "continued", "completed"]
    assert len({s.attributes and s.attributes["garrison.workflow.run_id"] for s in runs}) == 3


async def test_turning_tracing_off_ends_the_spans_of_running_workflows(
        spans: InMemorySpanExporter, autojump_clock: Any) -> None:
    # a run span opened while tracing was on is ended (so exported) when its run ends,
    # whether tracing is still on, was turned off, or another provider was enabled
    async with garrison.open_node() as node:
        await node.start_workflow(observe_app.receive_then_sleep, id="off")
        await node.start_workflow(observe_app.receive_then_sleep, id="other")
        await trio.sleep(1)
        garrison.tracing.disable()
        await node.send("workflows/off", "work", 1)
        assert await node.workflow("off").result() == 2
        garrison.tracing.enable(TracerProvider())  # spans go elsewhere from now on
        await node.send("workflows/other", "work", 2)
        assert await node.workflow("other").result() == 3
    runs = {span.attributes["garrison.workflow.id"]: span
            for span in by_name(spans)["workflow observe_app:receive_then_sleep"]}
    assert set(runs) == {"off", "other"}
    assert {span.attributes["garrison.workflow.status"] for span in runs.values()} == \
        {"completed"}


def test_the_trace_context_takes_no_part_in_equality() -> None:
    plain = Message("t", 1, Pid("processes", "1"), "m-1")
    traced = Message("t", 1, Pid("processes", "1"), "m-1", trace={"traceparent": "00-x"})
    assert plain == traced and hash(plain) == hash(traced)
    assert "traceparent" not in repr(traced)


async def test_a_node_turns_tracing_on_when_a_provider_is_set(monkeypatch: Any) -> None:
    from opentelemetry import trace

    assert not garrison.tracing.enabled()
    async with garrison.open_node():  # nothing set: the API's proxy provider
        assert not garrison.tracing.enabled()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
    try:
        async with garrison.open_node():
            assert garrison.tracing.enabled()
    finally:
        garrison.tracing.disable()


async def test_disable_keeps_tracing_off_when_the_next_node_opens(monkeypatch: Any) -> None:
    """An application that sets a global provider for its own spans and turns
    garrison's off (``disable()``) keeps them off: the next node's open turned them on
    again with that provider. A provider set after ``disable()`` is taken up, as the
    first one was, and ``enable()`` turns them on whatever was declined."""
    from opentelemetry import trace

    own = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: own)
    try:
        async with garrison.open_node():
            assert garrison.tracing.enabled()
        garrison.tracing.disable()
        async with garrison.open_node():
            assert not garrison.tracing.enabled()
        garrison.tracing.enable()
        assert garrison.tracing.enabled()
        garrison.tracing.disable()
        later = TracerProvider()
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: later)
        async with garrison.open_node():
            assert garrison.tracing.enabled()
    finally:
        garrison.tracing.disable()


class _BrokenProcessor(SpanProcessor):
    """A span processor of the application whose ``where`` raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise RuntimeError("exporter broken")

    def on_end(self, span: Any) -> None:
        if self.where == "on_end":
            raise RuntimeError("exporter broken")


class _BrokenPropagator(TraceContextTextMapPropagator):
    """The W3C propagator, but its ``where`` (``inject`` or ``extract``) raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    def inject(self, carrier: Any, context: Any = None, setter: Any = default_setter) -> None:
        if self.where == "inject":
            raise RuntimeError("propagator broken")
        super().inject(carrier, context, setter)

    def extract(self, carrier: Any, context: Any = None, getter: Any = default_getter) -> Any:
        if self.where == "extract":
            raise RuntimeError("propagator broken")
        return super().extract(carrier, context, getter)


@pytest.mark.parametrize("where", ["on_start", "on_end", "inject", "extract"])
async def test_a_failing_span_processor_or_propagator_is_logged_not_fatal(
        where: str, caplog: Any, autojump_clock: Any) -> None:
    """A span processor raising in on_end failed the workflow whose store.commit span
    it ended, as a StoreError ('the store failed: RuntimeError: exporter broken'), and
    the node with it; raising in on_start, or a propagator raising, killed the node
    (or failed every send). Now the chain process -> workflow -> process completes and
    the failure is logged once, as a tracing error naming it."""
    from opentelemetry import propagate

    provider = TracerProvider()
    if where.startswith("on_"):
        provider.add_span_processor(_BrokenProcessor(where))
    observe_app.TRACER = TracerProvider().get_tracer("test")  # the application's: sound
    observe_app.add_one_failures.clear()
    sound = propagate.get_global_textmap()
    if not where.startswith("on_"):
        propagate.set_global_textmap(_BrokenPropagator(where))
    garrison.tracing.enable(provider)
    try:
        async with garrison.open_node() as node:
            await node.spawn(observe_app.backend)
            await trio.sleep(0.1)
            pid = await node.spawn(observe_app.frontend)
            assert await node.wait(pid) == 84
            assert node.workflow("mid").status() == "completed"
    finally:
        garrison.tracing.disable()
        propagate.set_global_textmap(sound)
    logged = [r for r in caplog.records if r.name == "garrison.tracing"]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # once, not at every span
    assert logged[0].levelname == "ERROR"
    doing = {"on_start": "starting a span", "on_end": "ending a span",
             "inject": "injecting a message's trace context",
             "extract": "extracting a trace context"}[where]
    assert logged[0].getMessage().startswith(f"tracing error: {doing} ")
    assert "raised RuntimeError: " in logged[0].getMessage()
    assert "broken; the work goes on without it" in logged[0].getMessage()


def test_enable_names_a_provider_of_the_wrong_type() -> None:
    """``enable("nope")`` was a bare AttributeError ('str' object has no attribute
    'get_tracer')."""
    for wrong, shown in (("nope", "str 'nope'"), (42, "int 42")):
        with pytest.raises(TypeError, match=r"^garrison.tracing.enable\(tracer_provider="
                           r"...\): expected an OpenTelemetry TracerProvider .*, got "
                           + shown + "$"):
            garrison.tracing.enable(wrong)
    assert not garrison.tracing.enabled()


# ------------------------------------------------------------------ metrics
async def test_the_collector_reads_the_node(autojump_clock: Any) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    observe_app.add_one_failures.clear()
    async with garrison.open_node() as node:
        registry = garrison.metrics.collect(node)
        before = _observe.step_seconds.cumulative()[0][-1][1]
        await node.start_workflow(observe_app.sleeper, id="s")
        await node.send("workflows/s", "work", 41)
        assert await node.workflow("s").result() == 42
        await node.start_workflow(observe_app.counter, 0, id="c")
        await node.workflow("c").result()

        async def stuck() -> None:
            await trio.sleep_forever()  # never reads its inbox

        pid = await node.spawn(stuck)
        await node.send(pid, "x")
        await node.send(pid, "y")
        await node.send(Pid("processes", "gone"), "z")
        text = generate_latest(registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("garrison_workflow_starts_total", (("host", "workflows"),))] == 2
    assert samples[("garrison_workflow_finishes_total",
                    (("host", "workflows"), ("status", "completed")))] == 2
    assert samples[("garrison_workflow_finishes_total",
                    (("host", "workflows"), ("status", "failed")))] == 0
    assert samples[("garrison_dead_letters_total", ())] == 1
    assert samples[("garrison_messages_total", ())] >= 3
    assert samples[("garrison_inbox_largest", ())] == 2
    assert samples[("garrison_inbox_queued", ())] == 2
    assert samples[("garrison_processes", (("host", "processes"),))] == 1
    assert samples[("garrison_activity_attempt_seconds_count",
                    (("activity", "observe_app:add_one"), ("outcome", "error")))] >= 1
    assert samples[("garrison_activity_attempt_seconds_count",
                    (("activity", "observe_app:add_one"), ("outcome", "ok")))] >= 2
    assert samples[("garrison_workflow_step_seconds_count", ())] > before
    assert samples[("garrison_store_commit_batch_size_count", ())] >= 1
    assert samples[("garrison_store_transactions_total", (("host", "workflows"),))] >= 1


async def test_workflow_inboxes_are_counted_as_waiting(autojump_clock: Any) -> None:
    """garrison_inbox_queued and _largest (node.stats()'s queued, largest_inbox) counted
    the inboxes of plain processes only: 3 messages waiting for a workflow were 0."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    async def stuck() -> None:
        await trio.sleep_forever()  # never reads its inbox

    observe_app.add_one_failures.clear()
    async with garrison.open_node() as node:
        registry = garrison.metrics.collect(node)
        await node.start_workflow(observe_app.sleeper, id="s")
        pid = await node.spawn(stuck)
        for i in range(3):
            await node.send("workflows/s", "work", i)
        for i in range(2):
            await node.send(pid, "x", i)
        stats = node.stats()
        assert (stats["queued"], stats["largest_inbox"], stats["largest_inbox_pid"]) == \
            (5, 3, Pid("workflows", "s"))
        samples = {s.name: s.value for family in text_string_to_metric_families(
            generate_latest(registry).decode()) for s in family.samples}
        assert (samples["garrison_inbox_queued"], samples["garrison_inbox_largest"]) == (5, 3)
        assert await node.workflow("s").result() == 1  # it took one, then ended
        stats = node.stats()
        assert (stats["queued"], stats["largest_inbox"], stats["largest_inbox_pid"]) == \
            (2, 2, pid)


async def test_a_label_that_is_no_valid_text_is_escaped_not_a_failed_scrape(
        monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    # an activity named with a lone surrogate (its module:qualname: nothing refuses
    # that) made every later scrape of every node in the process fail (the histograms
    # are the process's): prometheus-client cannot encode it
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    hist = _observe.Histogram(_observe.LONG_BUCKETS)
    hist.observe(0.5)
    monkeypatch.setitem(_observe.activity_seconds, ("app:bad\ud800", "ok"), hist)
    async with garrison.open_node() as node:
        text = generate_latest(garrison.metrics.collect(node)).decode()
    counts = {s.labels["activity"]: s.value for family in text_string_to_metric_families(text)
              for s in family.samples if s.name == "garrison_activity_attempt_seconds_count"}
    assert counts["app:bad\\ud800"] == 1  # (escaped: a backslash, then 'ud800')


async def test_queued_workflows_are_in_the_workflows_gauge(autojump_clock: Any) -> None:
    # a host with max_concurrent holds the starts beyond it ``pending``: the queue's
    # depth is what an operator watches, and it was left out of garrison_workflows
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    async with garrison.open_node(max_concurrent=1) as node:
        registry = garrison.metrics.collect(node)
        for n in range(3):
            await node.start_workflow(observe_app.sleeper, id=f"q{n}")
        await trio.sleep(0.01)
        text = generate_latest(registry).decode()
        samples = {s.labels["status"]: s.value
                   for family in text_string_to_metric_families(text)
                   if family.name == "garrison_workflows" for s in family.samples}
        assert samples["pending"] == 2
        assert sum(samples.values()) == 3
        for n in range(3):
            await node.send(f"workflows/q{n}", "work", n)


async def test_a_cluster_counts_what_it_claims_as_starts_and_resumes(
        postgres_url: str) -> None:
    # on PostgreSQL a node runs what the cluster claims for it: a tool's start, and the
    # unfinished workflows of a node that died; neither was counted (starts_total says
    # a tool's start is counted once picked up; resumes: an unfinished one resumed)
    from garrison.persistence import Transaction, open_store

    def figures(registry: Any) -> tuple[float, float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = prometheus_client.generate_latest(registry).decode()
        samples = {s.name: s.value for family in text_string_to_metric_families(text)
                   for s in family.samples if s.labels.get("host") == "workflows"}
        return (samples["garrison_workflow_starts_total"],
                samples["garrison_workflow_resumes_total"])

    import prometheus_client

    async with garrison.open_node(store=postgres_url, name="t", lease="30s") as node:
        registry = garrison.metrics.collect(node)
        with open_store(postgres_url, lock=False) as tool:
            tool.write(Transaction().create_workflow("fresh", "observe_app:sleeper", []))
            # a row a node that died left running (no owner any more)
            tool.write(Transaction().create_workflow("left", "observe_app:sleeper", [],
                                                     status="running"))
        with trio.fail_after(10):
            while {node.workflow(w).status() for w in ("fresh", "left")} != {"sleeping"}:
                await trio.sleep(0.05)
        assert figures(registry) == (1, 1)
        # (its HELP says so too: it said "when it opened" only)
        help_text = next(f.documentation for f in registry.collect()
                         if f.name == "garrison_workflow_resumes")
        assert "took over" in help_text, help_text


async def _answer(stream: trio.SocketStream) -> tuple[str, str]:
    """What the metrics server sends on ``stream`` until it closes it: the answer's
    status line and body."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


async def _get(port: int, path: str = "/metrics", method: str = "GET",
               headers: str = "") -> tuple[str, str]:
    """One request (``headers``: extra lines, each ending in CRLF) on a connection of
    its own to the metrics server on ``port``: the answer's status line and body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        return await _answer(stream)


async def test_serve_answers_http(autojump_clock: Any) -> None:
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0") as where:
        assert where.url == f"http://127.0.0.1:{where.port}/metrics"

        status, body = await _get(where.port)
        assert status == "HTTP/1.1 200 OK"
        assert "# TYPE garrison_processes gauge" in body
        assert (await _get(where.port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
        assert (await _get(where.port, method="POST"))[0] == \
            "HTTP/1.1 405 Method Not Allowed"
        assert (await _get(where.port, method="HEAD"))[1] == ""


async def test_a_taken_address_is_a_clear_error(autojump_clock: Any) -> None:
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0") as where:
        with pytest.raises(garrison.metrics.MetricsError,
                           match=f"cannot serve metrics on 127.0.0.1:{where.port}"):
            async with garrison.metrics.serving(node, f"127.0.0.1:{where.port}"):
                pass


async def test_a_failing_collector_is_a_500_not_a_dead_server(autojump_clock: Any) -> None:
    # a collector of the application's registry that raises must not take the metrics
    # server (and, under garrison run, the node in the same nursery) down with it
    class Broken:
        def collect(self) -> Any:
            raise RuntimeError("the queue length is unknown")

        def describe(self) -> list[Any]:
            return []

    async with garrison.open_node() as node:
        registry = garrison.metrics.collect(node)
        registry.register(Broken())
        async with trio.open_nursery() as nursery:
            where = await nursery.start(partial(garrison.metrics.serve, node, "127.0.0.1:0",
                                                registry=registry))
            for _ in range(2):  # the server still answers after the failure
                status, body = await _get(where.port)
                assert status == "HTTP/1.1 500 Internal Server Error"
                assert "RuntimeError: the queue length is unknown" in body
                assert "Traceback" not in body
            nursery.cancel_scope.cancel()


async def test_a_malformed_accept_header_is_a_400_not_a_dead_node(
        autojump_clock: Any) -> None:
    # prometheus-client's choose_encoder raises on some Accept headers: one request
    # from anyone who reaches the port ended the server, and under garrison run the node
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0") as where:
        def get(accept: str) -> Any:
            return _get(where.port, headers=f"Accept: {accept}\r\n")

        status, body = await get("application/openmetrics-text; version=abc")
        assert status == "HTTP/1.1 400 Bad Request"
        assert "Accept" in body and "version=abc" in body
        assert (await get("text/plain"))[0] == "HTTP/1.1 200 OK"


async def test_connections_are_limited_and_a_silent_client_is_let_go(
        autojump_clock: Any) -> None:
    """A client opening many connections cannot take the node's file descriptors: past
    ``max_connections`` one is answered 503 and closed at once; a connection that
    sends no request is closed after ``timeout``, freeing its place."""
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0", max_connections=2,
                                     timeout=30) as where:

        async def answer(stream: trio.SocketStream) -> str:
            return (await _answer(stream))[0]

        silent = [await trio.open_tcp_stream("127.0.0.1", where.port) for _ in range(2)]
        start = trio.current_time()
        extra = await trio.open_tcp_stream("127.0.0.1", where.port)
        assert await answer(extra) == "HTTP/1.1 503 Service Unavailable"
        assert trio.current_time() - start < 30  # at once, not once one is let go
        # the silent ones are answered (408: no request) and closed after 30 s
        assert [await answer(s) for s in silent] == ["HTTP/1.1 408 Request Timeout"] * 2
        assert trio.current_time() - start >= 30
        for s in (*silent, extra):
            await s.aclose()
        stream = await trio.open_tcp_stream("127.0.0.1", where.port)
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await answer(stream) == "HTTP/1.1 200 OK"
        await stream.aclose()
        for bad in ({"max_connections": 0}, {"timeout": 0}):
            with pytest.raises(ValueError, match=next(iter(bad))):
                await garrison.metrics.serve(node, "127.0.0.1:0", **bad)  # type: ignore[arg-type]


async def test_a_refused_client_that_sent_its_request_reads_the_503(
        autojump_clock: Any) -> None:
    """A client over ``max_connections`` sends its request first, as every HTTP client
    (Prometheus) does: it read a connection reset, not the 503 saying why, as the
    refusal closed the socket with that request unread. The refusal now half-closes
    after its answer and reads what the client sent (briefly), then closes."""
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0", max_connections=1,
                                     timeout=30) as where:
        silent = await trio.open_tcp_stream("127.0.0.1", where.port)
        answers = [await _get(where.port) for _ in range(3)]
        assert [status for status, _ in answers] == ["HTTP/1.1 503 Service Unavailable"] * 3
        assert answers[0][1].endswith("busy: 1 connections already, try again\n")
        await silent.aclose()


def test_a_bad_bind_names_the_input() -> None:
    with pytest.raises(ValueError, match="'nowhere': expected HOST:PORT"):
        garrison.metrics.parse_bind("nowhere")


@pytest.mark.parametrize("bind", ["127.0.0.1:0:0", " 127.0.0.1:0", "127.0.0.1 :0",
                                  "[127.0.0.1]]:0", "[127.0.0.1]:0", "[::1:0", "::1:0",
                                  "[]:0", "local host:0"])
def test_a_malformed_host_is_refused_before_anything_starts(bind: str) -> None:
    """``127.0.0.1:0:0`` was split at its last colon and ``127.0.0.1:0`` taken for the
    host: refused only by the resolver once the node had started its services; a
    leading space alike, and ``[127.0.0.1]]:0`` was served (its brackets stripped)."""
    from garrison.console import check_bind

    with pytest.raises(ValueError, match=r"^bind .*: expected HOST:PORT"):
        garrison.metrics.parse_bind(bind)
    with pytest.raises(ValueError, match=r"^bind .*: expected HOST:PORT"):
        check_bind(bind, None)
    assert garrison.metrics.parse_bind("[::1]:9464") == ("::1", 9464)
    assert garrison.metrics.parse_bind("localhost:0", "--metrics") == ("localhost", 0)
    with pytest.raises(TypeError, match=r"^bind: expected 'HOST:PORT' as a string.*int 8233"):
        garrison.metrics.parse_bind(8233)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^bind: expected 'HOST:PORT' as a string.*int 8233"):
        check_bind(8233, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^token: expected a string, got int"):
        check_bind("127.0.0.1:0", 12345678901234567890)  # type: ignore[arg-type]


async def test_metrics_name_a_node_or_registry_of_the_wrong_type(
        autojump_clock: Any) -> None:
    """``collect(5)``, ``serve(5, ...)`` and ``serving(5, ...)`` were AttributeErrors
    from deep inside (``'int' object has no attribute '_router'``), as was a registry
    that is none."""
    node_type = r"expected a garrison Node \(from garrison.open_node\(\) .*got int 5"
    with pytest.raises(TypeError, match=r"^garrison.metrics.collect\(\): " + node_type):
        garrison.metrics.collect(5)
    with pytest.raises(TypeError, match=r"^garrison.metrics.serve\(\): " + node_type):
        await garrison.metrics.serve(5, "127.0.0.1:0")
    with pytest.raises(TypeError, match=r"^garrison.metrics.serve\(\): " + node_type):
        async with garrison.metrics.serving(5, "127.0.0.1:0"):
            pass
    async with garrison.open_node() as node:
        with pytest.raises(TypeError, match=r"^garrison.metrics.collect\(registry=...\): "
                           r"expected a prometheus_client CollectorRegistry, got int 5"):
            garrison.metrics.collect(node, 5)
        # serve's registry was taken as it came: every scrape was then a 500
        # ('str' object has no attribute 'collect')
        for wrong, shown in (("nope", "str 'nope'"), (42, "int 42"), (object(), "object")):
            with pytest.raises(TypeError, match=r"^garrison.metrics.serve\(registry=...\): "
                               r"expected a prometheus_client CollectorRegistry, got "
                               + shown), trio.fail_after(5):  # (not: served)
                await garrison.metrics.serve(node, "127.0.0.1:0", registry=wrong)


async def test_one_registry_takes_one_nodes_metrics(autojump_clock: Any) -> None:
    """helper-371: collecting a second node (or the same one again) into a registry
    that has a node's metrics was prometheus_client's DuplicateTimeseries, a list of
    some 55 series names, not saying that another node's collector was there (the
    series carry no node label). The registry is left as it was: the first node's."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    async with garrison.open_node() as a, garrison.open_node() as b:
        garrison.metrics.collect(a, registry)
        await a.spawn(observe_app.backend)  # (registers a name: a's figures, not b's)
        await trio.sleep(0.1)
        for node in (b, a):
            with pytest.raises(ValueError, match=(
                    r"^garrison.metrics.collect\(registry=...\): this registry has a node's "
                    r"metrics already .*give each node a registry of its own")) as got:
                garrison.metrics.collect(node, registry)
            assert "Duplicated timeseries" not in str(got.value)
        assert b"garrison_registered_names 1.0" in generate_latest(registry)
        assert b"garrison_registered_names 0.0" in generate_latest(garrison.metrics.collect(b))


async def test_the_metrics_of_a_stopped_node_are_none(autojump_clock: Any) -> None:
    """A registry of collect(node) went on reporting the node's last figures after it
    stopped (a workflow still 'waiting', a process live), while serve answers 503 then;
    collect, serve and serving of a node that had stopped were taken."""
    from prometheus_client import generate_latest

    async with garrison.open_node() as node:
        registry = garrison.metrics.collect(node)
        await node.start_workflow(observe_app.receive_then_sleep, id="w")
        await trio.sleep(1)
        assert b'garrison_workflows{host="workflows",status="waiting"} 1.0' in \
            generate_latest(registry)
    assert b"garrison_" not in generate_latest(registry)
    stopped = r"\(\): the node has stopped \(its open_node block ended\): it has no metrics"
    with pytest.raises(RuntimeError, match=r"^garrison.metrics.collect" + stopped):
        garrison.metrics.collect(node)
    with pytest.raises(RuntimeError, match=r"^garrison.metrics.serve" + stopped), \
            trio.fail_after(5):  # (not: served)
        await garrison.metrics.serve(node, "127.0.0.1:0")
    with pytest.raises(RuntimeError, match=r"^garrison.metrics.serve" + stopped):
        async with garrison.metrics.serving(node, "127.0.0.1:0"):
            pass


async def test_metrics_of_a_stopped_node_are_a_503_and_a_huge_head_a_431(
        autojump_clock: Any) -> None:
    """Served from a nursery of one's own, the server outlives the node: it went on
    answering the node's last figures as live (the console answers 503 then). A
    request head over 16 KiB was answered and the socket closed with the rest unread:
    the client read a connection reset, not the answer."""
    async with trio.open_nursery() as nursery:
        async with garrison.open_node() as node:
            where = await nursery.start(partial(garrison.metrics.serve, node, "127.0.0.1:0",
                                                timeout="10s"))
            assert (await _get(where.port))[0] == "HTTP/1.1 200 OK"
            status, body = await _get(where.port, headers=f"X-Big: {'x' * 40_000}\r\n")
            assert status == "HTTP/1.1 431 Request Header Fields Too Large", status
            assert body == "request head over 16384 bytes\n"
            assert (await _get(where.port))[0] == "HTTP/1.1 200 OK"
        status, body = await _get(where.port)
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert body == "the node these metrics are of has stopped\n"
        assert (await _get(where.port, "/"))[0] == "HTTP/1.1 200 OK"
        nursery.cancel_scope.cancel()


async def test_metrics_answer_no_request_whose_head_never_ended(autojump_clock: Any) -> None:
    """A head without its blank line was answered 200 with the metrics: when the client
    closed its side, or when its 10 s ran out (README: its connection is closed then)."""
    partial_head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Unfinished: "
    async with garrison.open_node() as node, \
            garrison.metrics.serving(node, "127.0.0.1:0", timeout="10s") as where:
        async with await trio.open_tcp_stream("127.0.0.1", where.port) as stream:
            await stream.send_all(partial_head)
            await stream.send_eof()
            status, body = await _answer(stream)
            assert status == "HTTP/1.1 400 Bad Request", status
            assert body == "bad request: the request head ended before its blank line\n"
        async with await trio.open_tcp_stream("127.0.0.1", where.port) as stream:
            await stream.send_all(partial_head)
            start = trio.current_time()
            status, body = await _answer(stream)
            assert (status, body) == ("HTTP/1.1 408 Request Timeout",
                                      "no complete request within 10s\n")
            assert trio.current_time() - start == pytest.approx(10, abs=0.5)
        assert (await _get(where.port))[0] == "HTTP/1.1 200 OK"
        async with await trio.open_tcp_stream("127.0.0.1", where.port) as stream:
            # (lines ending in a bare LF, as `printf 'GET /metrics HTTP/1.0\n\n' | nc`
            # sends them: RFC 9112 lets a server take them; helper-211)
            await stream.send_all(b"GET /metrics HTTP/1.0\nHost: x\n\n")
            start = trio.current_time()
            assert (await _answer(stream))[0] == "HTTP/1.1 200 OK"
            assert trio.current_time() - start < 1


# ------------------------------------------------------------------ garrison run --metrics
APP = """\
version: "1.0"
namespace: app
entries:
  - {name: crash, kind: process.py, source: "obs_cli_app:crash"}
  - {name: starter, kind: process.py, source: "obs_cli_app:start_workflows"}
  - name: crasher
    kind: process.service
    process: app:crash
    lifecycle:
      auto_start: true
      restart: {initial_delay: 50ms, max_delay: 50ms, jitter: 0}
  - {name: starts, kind: process.service, process: app:starter, lifecycle: {auto_start: true}}
"""

CLI_APP = """\
import garrison
from garrison import process

async def crash():
    raise RuntimeError("boom")

async def work(n):
    return n * 2

async def start_workflows():
    node = garrison.current_node()
    for i in range(3):
        await node.start_workflow(work, i, id=f"w{i}")
    async for _ in process.inbox():
        pass
"""


def write_app(where: Path) -> None:
    (where / "app.yaml").write_text(APP)
    (where / "obs_cli_app.py").write_text(CLI_APP)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _starts(node: garrison.Node) -> float:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(garrison.metrics.collect(node)).decode()
    return next(s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "garrison_workflow_starts_total")


async def test_workflow_starts_count_every_start_the_node_performs(
        tmp_path: Path, autojump_clock: Any) -> None:
    """garrison_workflow_starts_total counts the workflows a node starts: its own
    (start_workflow, a schedule's tick) and those a tool created in its store while no
    node ran (CLI start, schedules trigger), picked up when it opens the store; a
    resume or a retry is no start."""
    import schedule_app

    from garrison import _store_tools as tools

    db = str(tmp_path / "s.db")
    async with garrison.open_node(store=db) as node:
        await node.schedule("yearly", schedule_app.job, cron="0 3 1 1 *")
        await node.start_workflow(schedule_app.job, 10.0, id="resumed")
    store = tools.open_store(db)
    try:  # no node: a tool's start and a trigger
        tools.start(store, "schedule_app:job", [], "cli-1")
        tools.pause_schedule(store, "yearly")  # (virtual time must not reach its ticks)
        triggered = tools.trigger_schedule(store, "yearly")
    finally:
        store.close()
    async with garrison.open_node(store=db) as node:
        assert _starts(node) == 2  # not the resumed one
        for wid in ("cli-1", triggered, "resumed"):
            await node.workflow(wid).result()
        await node.start_workflow(schedule_app.job, id="api")
        ops_app.FAILS["x"] = 2
        await node.start_workflow(ops_app.order, "x", id="f")
        with pytest.raises(garrison.WorkflowFailed):
            await node.workflow("f").result()
        await node.workflow("f").retry()
        await trio.sleep(1)
        assert _starts(node) == 4  # api, f (its retry is no start)
        await node.schedule("hourly", schedule_app.job, every="1h")
        await trio.sleep(3600)  # one tick
        assert node.schedule_handle("hourly").info().last_workflow.startswith("hourly@")
        assert _starts(node) == 5


async def test_a_workflow_a_service_starts_again_as_the_node_opens_is_a_resume(
        tmp_path: Path, autojump_clock: Any) -> None:
    """An auto_start service that starts a workflow by id runs before the node resumes
    its store's workflows: its start of one the previous run left unfinished is that
    workflow's resume, not a start (it counted as one, and its resume not at all)."""
    import prometheus_client
    from prometheus_client.parser import text_string_to_metric_families

    db = tmp_path / "s.db"
    async with garrison.open_node(store=str(db)) as node:
        await node.start_workflow(observe_app.sleeper, id="sleepy")
        await trio.sleep(1)
        assert node.workflow("sleepy").status() == "sleeping"
    config = tmp_path / "app.yaml"
    config.write_text(textwrap.dedent(f"""\
        version: "1.0"
        namespace: app
        entries:
          - {{name: workflows, kind: workflow.host, store: {str(db)!r}}}
          - {{name: starter, kind: process.py, source: "observe_app:starts_sleeper"}}
          - {{name: starts, kind: process.service, process: app:starter,
              lifecycle: {{auto_start: true}}}}
        """))
    async with garrison.open_node(config=str(config)) as node:
        await trio.sleep(1)
        assert node.workflow("sleepy").status() == "sleeping"
        text = prometheus_client.generate_latest(garrison.metrics.collect(node)).decode()
    samples = {s.name: s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.labels.get("host") == "app:workflows"}
    assert (samples["garrison_workflow_starts_total"],
            samples["garrison_workflow_resumes_total"]) == (0, 1)


def _host_samples(node: garrison.Node, host: str = "workflows") -> dict[str, float]:
    import prometheus_client
    from prometheus_client.parser import text_string_to_metric_families

    text = prometheus_client.generate_latest(garrison.metrics.collect(node)).decode()
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.labels.get("host") == host}


async def test_workflows_a_failed_store_stopped_are_counted(
        tmp_path: Path, autojump_clock: Any) -> None:
    """A store that refuses writes for good (a full disk) stops each workflow that meets
    it, blocked in memory with nothing recorded: an on-call alerts on it, so it is
    counted by host (it showed in no counter, only in the blocked gauge, as a
    workflow whose code diverged does)."""
    from _commit_faults import FullDisk

    async with garrison.open_node(store=str(tmp_path / "s.db")) as node:
        assert _host_samples(node)["garrison_workflow_store_errors_total"] == 0
        await node.start_workflow(observe_app.two_steps, id="w")
        await trio.sleep(0.5)
        disk = FullDisk.of(node.hosts["workflows"].store)
        disk.full = True
        await trio.sleep(1)  # its second step meets the full disk
        assert node.workflow("w").status() == "blocked"
        samples = _host_samples(node)
        assert samples["garrison_workflow_store_errors_total"] == 1
        disk.full = False


async def test_a_nodes_lease_lapses_are_counted(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node cut off from its cluster's store past its lease loses its workflows (the
    other nodes claim them): counted, by clustered host, for an on-call's alert (said
    only as a warning in the log)."""
    import logging

    from garrison.persistence import PostgresStore

    caplog.set_level(logging.INFO, logger="garrison")
    async with garrison.open_node(store=postgres_url, name="t", lease="1s") as node:
        assert _host_samples(node)["garrison_cluster_lease_lapses_total"] == 0
        member = node._members[0]
        with PostgresStore(postgres_url, lock=False) as tool:
            # paused past its lease: the server says it lapsed
            tool._query("UPDATE garrison.nodes SET lease_until = lease_until - 100 "
                        "WHERE epoch = %s RETURNING 1", (member.epoch,))
        with trio.fail_after(10):
            while not any("lost its lease" in m for m in caplog.messages):
                await trio.sleep(0.05)
        assert _host_samples(node)["garrison_cluster_lease_lapses_total"] == 1


@pytest.mark.parametrize("clustered", [False, True])
async def test_a_hosts_queue_depth_is_a_gauge(
        clustered: bool, request: pytest.FixtureRequest, tmp_path: Path,
        autojump_clock: Any) -> None:
    """garrison_workflow_queue_pending is the host's queue depth, as
    node.stats()["workflow_queues"] gives it: on PostgreSQL the workflows a full node
    left to wait in the store, unclaimed, are pending too. No metric had it:
    garrison_workflows{status="pending"} counts those in the node's memory, so a
    cluster's backlog read 0."""
    import schedule_app

    store = request.getfixturevalue("postgres_url") if clustered else str(tmp_path / "s.db")
    async with garrison.open_node(store=store, max_concurrent=1) as node:
        await node.start_workflow(schedule_app.waits_for_go, id="hog")
        for n in range(3):
            await node.start_workflow(schedule_app.job, id=f"n{n}")
        await trio.sleep(1)
        assert node.stats()["workflow_queues"]["workflows"]["pending"] == 3
        samples = {s.name: s.value for family in garrison.metrics.collect(node).collect()
                   for s in family.samples if s.labels.get("host") == "workflows"}
        assert samples["garrison_workflow_queue_pending"] == 3
        await node.send("workflows/hog", "go", "x")
        for n in range(3):
            await node.workflow(f"n{n}").result()
        await trio.sleep(1)
        samples = {s.name: s.value for family in garrison.metrics.collect(node).collect()
                   for s in family.samples if s.labels.get("host") == "workflows"}
        assert samples["garrison_workflow_queue_pending"] == 0


async def test_workflow_starts_count_a_tools_start_while_the_node_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real time: ``garrison workflows start`` while a node runs; the node starts it."""
    from garrison._cli import build_parser

    db = str(tmp_path / "s.db")
    args = build_parser().parse_args(
        ["workflows", "--store", db, "start", "schedule_app:job", "[]", "--id", "cli"])
    async with garrison.open_node(store=db) as node:
        code = await trio.to_thread.run_sync(args.func, args)
        assert code == 0, capsys.readouterr()
        with trio.fail_after(10):
            assert await node.workflow("cli").result() == "cli"
        assert _starts(node) == 1


def test_garrison_run_serves_metrics(tmp_path: Path) -> None:
    import time

    write_app(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "garrison", "run", "app.yaml", "--metrics", "127.0.0.1:0",
         "--store", "app.db", "--log-level", "ERROR"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # (its own messages are on stderr, as its log)
        while line and not line.startswith("garrison run: metrics at "):
            line = proc.stderr.readline()
        assert line.startswith("garrison run: metrics at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            samples = _scrape(url)
            restarts = samples[("garrison_service_restarts_total", (("service", "app:crasher"),))]
            done = samples[("garrison_workflow_finishes_total",
                            (("host", "workflows"), ("status", "completed")))]
            if (restarts >= 2 and done == 3) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert restarts >= 2
        assert done == 3
        assert samples[("garrison_workflow_starts_total", (("host", "workflows"),))] == 3
        assert samples[("garrison_service_status",
                        (("service", "app:starts"), ("status", "running")))] == 1
        assert samples[("garrison_processes", (("host", "processes"),))] >= 2
        assert samples[("garrison_store_commit_seconds_count", ())] >= 1
        assert samples[("garrison_workflow_step_seconds_count", ())] >= 3
    finally:
        proc.send_signal(2)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


LINGERING = """\
import trio

async def main():
    try:
        await trio.sleep_forever()
    finally:  # a cleanup the node's stop waits for
        with trio.CancelScope(shield=True):
            await trio.sleep(0.6)
"""


def test_garrison_run_answers_503_through_the_nodes_stop(tmp_path: Path) -> None:
    """helper-371: ``garrison run`` cancelled its metrics server (and console) before
    the node's stop: for the whole stop, however long a process's cleanup made it,
    every connection was refused. They answer ``503`` through it, as served from a
    nursery of one's own, and close once the node has stopped."""
    import time
    import urllib.error
    import urllib.request

    (tmp_path / "lingering.py").write_text(LINGERING)
    proc = subprocess.Popen(
        [sys.executable, "-m", "garrison", "run", "lingering.py", "--metrics", "127.0.0.1:0",
         "--ui", "127.0.0.1:0", "--log-level", "ERROR"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stderr is not None
        urls: dict[str, str] = {}
        while len(urls) < 2:
            line = proc.stderr.readline()
            assert line, urls
            for what in ("metrics", "web console"):
                if line.startswith(f"garrison run: {what} at "):
                    urls[what] = line.split(" at ", 1)[1].strip()
        urls["web console"] += "api/workflows"
        proc.send_signal(2)
        answers: dict[str, list[object]] = {what: [] for what in urls}
        while proc.poll() is None:
            for what, url in urls.items():
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        answers[what].append(response.status)  # (before the signal's turn)
                except urllib.error.HTTPError as exc:
                    answers[what].append(exc.code)
                except OSError:
                    answers[what].append("refused")  # (once the node has stopped)
            time.sleep(0.05)
    finally:
        proc.send_signal(2)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for what in ("metrics", "web console"):
        got = answers[what]
        assert got.count(503) >= 3, (what, got)  # (0.6s of cleanup, polled every 0.05s)
        last = len(got) - 1 - got[::-1].index(503)
        assert "refused" not in got[:last], (what, got)


def test_garrison_run_refuses_a_bad_metrics_address(tmp_path: Path) -> None:
    import socket

    write_app(tmp_path)
    done = subprocess.run([sys.executable, "-m", "garrison", "run", "app.yaml", "--metrics",
                           "9464"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--metrics '9464': expected HOST:PORT" in done.stderr
    done = subprocess.run([sys.executable, "-m", "garrison", "run", "app.yaml", "--metrics",
                           "127.0.0.1:0:0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2  # before anything started (it was once services ran)
    assert done.stderr == ("garrison run: --metrics '127.0.0.1:0:0': expected HOST:PORT, e.g. "
                           "127.0.0.1:9464 (an IPv6 address in brackets, [::1]:PORT; port 0 "
                           "picks a free one)\n"), done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "garrison", "run", "app.yaml",
                               "--metrics", f"127.0.0.1:{port}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.endswith(f"garrison run: cannot serve metrics on 127.0.0.1:{port}: "
                                "Address already in use\n"), done.stderr


# ------------------------------------------------------------------ without the extras
PROGRAM = """\
import sys, json
BLOCK = {block!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if BLOCK and name.split(".")[0] in ("opentelemetry", "prometheus_client"):
            raise ImportError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, {tests!r})
import garrison
import observe_app
from garrison import process

async def main():
    async with garrison.open_node() as node:
        pid = await node.start_workflow(observe_app.sleeper, id="s")
        await node.send(pid, "work", 1)
        result = await node.workflow("s").result()
        errors = []
        if BLOCK:
            try:
                garrison.metrics.collect(node)
            except ImportError as exc:
                errors.append(str(exc))
            try:
                garrison.tracing.enable()
            except ImportError as exc:
                errors.append(str(exc))
        return result, errors

import trio
from trio.testing import MockClock
result, errors = trio.run(main, clock=MockClock(autojump_threshold=0))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "prometheus_client"))
print(json.dumps({{"result": result, "errors": errors, "loaded": loaded}}))
"""


@pytest.mark.parametrize("block", [True, False], ids=["extras-missing", "extras-unused"])
def test_nothing_is_imported_without_the_extras(block: bool) -> None:
    code = PROGRAM.format(block=block, tests=str(ROOT / "tests"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["result"] == 2
    assert out["loaded"] == []  # not even imported when installed: nobody asked for them
    if block:
        assert out["errors"] == [
            "metrics need prometheus-client: pip install 'garrison[metrics]' "
            "(prometheus_client is missing)",
            "tracing needs OpenTelemetry: pip install 'garrison[otel]' "
            "(opentelemetry is missing)"]
    else:
        assert out["errors"] == []


def _without(tmp_path: Path, package: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``garrison ARGV`` in ``tmp_path`` (the app of :func:`write_app`) with ``package``
    not importable, as if it were not installed."""
    write_app(tmp_path)
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == {package!r}:
                    raise ImportError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Blocker())
    """))
    return subprocess.run([sys.executable, "-m", "garrison", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={
                              **os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})


def test_garrison_run_without_prometheus_says_what_to_install(tmp_path: Path) -> None:
    done = _without(tmp_path, "prometheus_client", "run", "app.yaml", "--metrics",
                    "127.0.0.1:0")
    assert done.returncode == 2
    assert "--metrics needs the metrics extra: pip install 'garrison[metrics]'" in done.stderr


@pytest.mark.parametrize("argv", [["run", "app.yaml", "--ui", "127.0.0.1:0"],
                                  ["ui", "--store", "app.db"]])
def test_the_console_without_hypercorn_says_what_to_install(tmp_path: Path,
                                                            argv: list[str]) -> None:
    """Starlette and Jinja2 present (as with FastAPI installed), Hypercorn not: the
    check before start imported only the console's app, and the node started, then
    died of the ImportError (a traceback, exit 1)."""
    (tmp_path / "app.db").write_bytes(b"")
    done = _without(tmp_path, "hypercorn", *argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"garrison {argv[0]}: the web console needs the ui extra: pip "
                           "install 'garrison[ui]' (in a source checkout: pip install -e "
                           "'.[ui]') (hypercorn is missing)\n"), done.stderr


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise KeyError("status")


@garrison.activity(retry=garrison.RetryPolicy(max_attempts=1))
async def _raises_unprintable() -> None:
    raise _Unprintable()


async def _calls_unprintable() -> str:
    try:
        await _raises_unprintable()
    except garrison.ActivityError as exc:
        return exc.error.type
    return "no failure"


async def test_an_activity_span_records_an_exception_whose_str_fails(
        spans: InMemorySpanExporter, autojump_clock: Any) -> None:
    """With tracing on, an activity's span formatting an exception whose str() fails
    raised that KeyError instead: the activity failed with KeyError, not its own."""
    async with garrison.open_node() as node:
        await node.start_workflow(_calls_unprintable, id="u")
        assert await node.workflow("u").result() == "_Unprintable"
    statuses = [s.status.description or "" for s in spans.get_finished_spans()]
    assert any("str() failed: KeyError" in d for d in statuses), statuses
