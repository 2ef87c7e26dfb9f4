"""garrison beside an asyncio application (a FastAPI or aiohttp server, say).

Run it:  python examples/asyncio_app.py [STORE.db]

The node runs in a thread of its own (its trio run). Asyncio code reaches it through
``NodeThread.call``: the coroutine runs in the node's run, and the asyncio side awaits
a future, so no thread is held while a request waits for a workflow that may take
days (``asyncio.to_thread(trio.from_thread.run, ...)`` would hold one of asyncio's few
executor threads for the whole wait, and six such waits on a 2-CPU machine block
every other request). Cancelling the awaiting task (``asyncio.wait_for``'s timeout)
stops the wait only: the workflow runs on. A client gone cancels nothing unless the
server cancels its handler (Starlette does not), and servers let requests under way
end before the app's shutdown stops the node: bound each wait a request makes. A node
that cannot open (its store is held by another process: ``StoreLocked``) raises from
``start()`` instead of leaving the app waiting. Start it in the app's startup and stop
it in its shutdown (an ASGI lifespan: ``start()``, then ``try: yield`` and ``await
aclose()`` in the ``finally``: ``stop()`` off the loop). A node whose run ends on its
own (a process let a ``KeyboardInterrupt`` out) reads ``alive`` False and its cause in
``error`` (a health check); later calls name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import garrison
from garrison import process


async def approval(request: str) -> str:
    """Waits (durably, up to two days) for an ``approve`` message."""
    msg = await process.inbox().receive(timeout="2d")
    return f"{request}: " + ("expired" if msg is None else f"approved by {msg.payload}")


def _as_exception(error: BaseException, what: str) -> Exception:
    """``error`` if it is an ``Exception``; else (``SystemExit``, ``KeyboardInterrupt``, a
    ``BaseExceptionGroup``) a ``RuntimeError`` naming it, chained from it: asyncio
    re-raises a ``SystemExit`` or ``KeyboardInterrupt`` a task lets through out of its
    loop, which would end the whole app."""
    if isinstance(error, Exception):
        return error
    wrapped = RuntimeError(f"{what} {error!r} (given as a RuntimeError: raised as is, a "
                           "SystemExit or KeyboardInterrupt would end the asyncio loop, "
                           "every request with it)")
    wrapped.__cause__ = error
    return wrapped


class NodeThread:
    """A garrison node in a thread of its own, used from asyncio. ``start()`` it (again
    after ``stop()`` if you like: a test client per test), ``call()`` into it, ``aclose()``
    it (or ``stop()`` from a thread); a call made while or after it stops gets an error,
    never a wait for ever. ``alive`` and ``error`` say whether it runs (a health check)."""

    def __init__(self, **node_options: Any) -> None:
        self._options = node_options
        self._thread: threading.Thread | None = None
        self._failed: list[BaseException] = []
        self._open = False  # (the node's nursery takes calls: see call())
        self.node: garrison.Node | None = None

    @property
    def alive(self) -> bool:
        """True while the node runs and takes calls: started, not stopped, not failed."""
        return self._open

    @property
    def error(self) -> BaseException | None:
        """What ended the node's run on its own (a process let a ``KeyboardInterrupt`` or
        ``SystemExit`` out, its store failed...), ``None`` while it runs or if it did not
        fail. Kept after ``stop()``, until the next ``start()``."""
        return self._failed[0] if self._failed else None

    def start(self) -> garrison.Node:
        """Open the node in its thread; its error (``StoreLocked``, ...) if it cannot."""
        if self._thread is not None:
            raise RuntimeError("this NodeThread runs already: stop() it before starting "
                               "it again")
        self._ready = threading.Event()
        self._failed = []  # (a new run: the last one's error is gone)
        self._open = False
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed:
            self._thread.join()
            self._thread = None
            raise self._failed[0]
        assert self.node is not None
        return self.node

    async def _serve(self) -> None:
        self._stop = trio.Event()
        try:
            async with garrison.open_node(**self._options) as node, \
                    trio.open_nursery() as nursery:
                self.node, self._nursery = node, nursery
                self._token = trio.lowlevel.current_trio_token()
                self._open = True
                self._ready.set()
                await self._stop.wait()
                self._open = False
                nursery.cancel_scope.cancel()  # (waits still under way end: the node stops)
        except BaseException as exc:  # (it did not open: start() raises it; it failed as
            self._failed.append(exc)  # it ran or closed: stop() does. Not raised here: a
            # thread's error is printed, or for SystemExit not even that, and lost)
        finally:
            self._open = False
            self._ready.set()

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any,
             **kwargs: Any) -> asyncio.Future[Any]:
        """From asyncio: ``await fn(*args, **kwargs)`` run in the node's trio run, as an
        asyncio future. ``fn`` runs in a copy of the caller's context (its contextvars:
        the current span, so a workflow it starts joins the caller's trace). Cancelling
        the future (``asyncio.wait_for``'s timeout, the awaiting task cancelled) cancels
        that run of ``fn`` (not a workflow it started or waits for). What ``fn`` raises is
        the future's error, one request's error never stops the node; a ``BaseException``
        not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, a nursery's
        ``BaseExceptionGroup``) comes as a ``RuntimeError`` naming it, chained from it:
        asyncio re-raises a ``SystemExit`` or ``KeyboardInterrupt`` a task lets through
        out of its loop, which would end the whole app for one request. A call the node
        cannot take (stopped, or failed: then named) is an error, never a wait for ever.

        Made on the app's asyncio loop only (``RuntimeError`` elsewhere, saying so): from
        a thread of your own (a sync endpoint's, in a threadpool) use
        ``trio.from_thread.run(fn, *args, trio_token=runner.node.trio_token)``; inside
        the node (``fn`` itself, a process, an activity) await ``fn`` directly."""
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (asyncio's bare "no running event loop": say where to call)
            raise self._off_the_loop(name) from None
        done: asyncio.Future[Any] = loop.create_future()
        if self._thread is None or not self._open:  # (never started: no node yet)
            done.set_exception(self._stopped() if self.node is not None else
                               RuntimeError("the node is not started: start() it first"))
            return done
        scope = trio.CancelScope()
        context = contextvars.copy_context()  # (its trace, ids: begin runs in trio's own)

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def tell(result: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # (the asyncio loop has closed)
                loop.call_soon_threadsafe(settle, result, error)

        async def run() -> None:
            try:
                with scope:
                    tell(await fn(*args, **kwargs), None)
            except BaseException as exc:  # (its failure, not the node's: a KeyboardInterrupt
                # or a nursery's group too. Ctrl-C goes to the app's main thread, not here;
                # a Cancelled from outside scope is the node's stop, which goes on up)
                stopping, error = (exc.split(trio.Cancelled)
                                   if isinstance(exc, BaseExceptionGroup) else
                                   (exc, None) if isinstance(exc, trio.Cancelled) else
                                   (None, exc))
                if error is not None:
                    tell(None, _as_exception(error, f"NodeThread.call of {name} raised"))
                if stopping is exc:
                    raise
                if stopping is not None:
                    raise stopping from None
            finally:  # (cut short: the future was cancelled, or the node stops)
                tell(None, RuntimeError("the node stopped before the call ended"))

        def begin() -> None:  # (in the node's run: its nursery may have closed since)
            if not self._open:
                tell(None, self._stopped())
                return
            try:
                context.run(self._nursery.start_soon, run)  # (run copies the caller's)
            except RuntimeError:  # (closed: "Nursery is closed to new arrivals")
                tell(None, self._stopped())

        def cancel_run(_future: asyncio.Future[Any]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)

        try:
            self._token.run_sync_soon(begin)
        except trio.RunFinishedError:  # (it stopped just now)
            done.set_exception(self._stopped())
            return done
        done.add_done_callback(cancel_run)
        return done

    def _stopped(self) -> RuntimeError:
        """The error of a call the node cannot take: it stopped, or failed (then named,
        and chained from what failed it)."""
        error = self.error
        if error is None:
            return RuntimeError("the node has stopped (NodeThread.stop, or it failed): "
                                "start() it again to call into it")
        stopped = RuntimeError(f"the node has stopped: it failed with {error!r} "
                               "(NodeThread.error); stop() it, then start() it again to "
                               "call into it")
        stopped.__cause__ = error
        return stopped

    def _off_the_loop(self, name: str) -> RuntimeError:
        """The error of ``call`` made where no asyncio loop runs."""
        with contextlib.suppress(RuntimeError):  # (in no trio run either)
            if self._thread is not None and \
                    trio.lowlevel.current_trio_token() is self._token:
                return RuntimeError(
                    f"NodeThread.call({name}) is made inside the node's own trio run (a "
                    f"call's fn, a process, an activity): await {name}(...) there directly")
        return RuntimeError(
            f"NodeThread.call({name}) is awaited on the app's asyncio loop (in an async "
            "handler), and this thread runs none: from a thread of your own (a sync "
            "endpoint's, in a threadpool) call trio.from_thread.run(fn, *args, "
            "trio_token=runner.node.trio_token), which holds that thread until fn "
            "returns; see README, 'From an asyncio or a threaded app'")

    def stop(self) -> None:
        """Stop the node (its workflows resume from the store on the next start) and wait
        for it, in a sync call (a thread, a script, a test); on the asyncio loop ``await
        aclose()``. What made it fail while it ran, if something did (``error``), is
        raised, a ``BaseException`` as a ``RuntimeError`` chained from it (as ``call``
        gives one). Once stopped, a second stop does nothing."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        thread.join()
        self._thread = None
        if self._failed:
            raise _as_exception(self._failed[0], "the node failed with")

    async def aclose(self) -> None:
        """``stop()`` in a worker thread, from asyncio: a node takes a while to stop (one
        holding 20,000 waiting workflows: seconds), and the loop (a second Ctrl-C, the
        other requests) runs on meanwhile. Cancelled, the stop goes on in its thread."""
        await asyncio.to_thread(self.stop)


async def main(store: str | None = None) -> list[str]:
    runner = NodeThread(store=store)
    node = await asyncio.to_thread(runner.start)  # (an open may wait: not on the loop)

    async def place(request: str) -> str:  # runs in the node's run
        await node.start_workflow(approval, request, id=request)
        return await node.workflow(request).result()

    try:
        # twenty requests wait at once (asyncio's executor has fewer threads than that)
        waits = [asyncio.ensure_future(runner.call(place, f"req-{i}")) for i in range(20)]
        gone = asyncio.ensure_future(runner.call(place, "req-gone"))
        await asyncio.sleep(0.2)
        gone.cancel()  # its request was cancelled: the wait ends, the workflow does not
        for i in range(20):
            await runner.call(node.workflow(f"req-{i}").signal, "approve", "ann")
        results = await asyncio.gather(*waits)
        print(f"  {len(results)} requests answered, e.g. {results[0]!r}")
        status = await runner.call(_status, node, "req-gone")
        print(f"  req-gone is still {status} (its request was cancelled)")
        results.append(status)
    finally:
        await runner.aclose()  # (off the loop: a node may take seconds to stop)
    return results


async def _status(node: garrison.Node, wid: str) -> str:
    return str(node.workflow(wid).status())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
