"""garrison beside an asyncio application (a FastAPI or aiohttp server, say).

Run it:  python examples/asyncio_app.py [STORE.db]

The node runs in a thread of its own (its trio run). Asyncio code reaches it through
``NodeThread.call``: the coroutine runs in the node's run, and the asyncio side awaits
a future, so no thread is held while a request waits for a workflow that may take
days (``asyncio.to_thread(trio.from_thread.run, ...)`` would hold one of asyncio's few
executor threads for the whole wait, and six such waits on a 2-CPU machine block
every other request). Cancelling the awaiting request (a client gone) stops the wait
only: the workflow runs on. A node that cannot open (its store is held by another
process: ``StoreLocked``) raises from ``start()`` instead of leaving the app waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class NodeThread:
    """A garrison node in a thread of its own, used from asyncio."""

    def __init__(self, **node_options: Any) -> None:
        self._options = node_options
        self._ready = threading.Event()
        self._failed: list[BaseException] = []
        self.node: garrison.Node | None = None

    def start(self) -> garrison.Node:
        """Open the node in its thread; its error (``StoreLocked``, ...) if it cannot."""
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed:
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
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()  # (waits still under way end: the node stops)
        except Exception as exc:  # (it did not open: start() raises it; it failed as it
            self._failed.append(exc)  # ran or closed: stop() does)
        finally:
            self._ready.set()

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Future[Any]:
        """From asyncio: ``await fn(*args)`` run in the node's trio run, as an asyncio
        future. Cancelling the future cancels that run of ``fn`` (not a workflow it
        started or waits for)."""
        assert self.node is not None, "start() the node first"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        scope = trio.CancelScope()

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
                    tell(await fn(*args), None)
            except Exception as exc:
                tell(None, exc)
            finally:  # (cut short: the future was cancelled, or the node stops)
                tell(None, RuntimeError("the node stopped before the call ended"))

        def cancel_run(_future: asyncio.Future[Any]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)

        self._token.run_sync_soon(self._nursery.start_soon, run)
        done.add_done_callback(cancel_run)
        return done

    def stop(self) -> None:
        """Stop the node (its workflows resume from the store on the next start)."""
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._failed:
            raise self._failed[0]


async def main(store: str | None = None) -> list[str]:
    runner = NodeThread(store=store)
    node = runner.start()

    async def place(request: str) -> str:  # runs in the node's run
        await node.start_workflow(approval, request, id=request)
        return await node.workflow(request).result()

    try:
        # twenty requests wait at once (asyncio's executor has fewer threads than that)
        waits = [asyncio.ensure_future(runner.call(place, f"req-{i}")) for i in range(20)]
        gone = asyncio.ensure_future(runner.call(place, "req-gone"))
        await asyncio.sleep(0.2)
        gone.cancel()  # its client went away: the wait ends, the workflow does not
        for i in range(20):
            await runner.call(node.workflow(f"req-{i}").signal, "approve", "ann")
        results = await asyncio.gather(*waits)
        print(f"  {len(results)} requests answered, e.g. {results[0]!r}")
        status = await runner.call(_status, node, "req-gone")
        print(f"  req-gone is still {status} (its request was cancelled)")
        results.append(status)
    finally:
        runner.stop()
    return results


async def _status(node: garrison.Node, wid: str) -> str:
    return str(node.workflow(wid).status())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
