"""``garrison.testing.replay``: an exported history replayed in a test."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import trio

from ..hosts.workflow import History, ReplayResult, replay_history

__all__ = ["replay"]


def replay(history: Any, target: Any = None) -> ReplayResult:
    """Replay a workflow's history against the code installed now, with no effects (no
    activity runs, nothing is sent or written), up to the end of its journal; raise the
    :class:`~garrison.NonDeterminismError` if the code takes another path, else return
    the :class:`~garrison.hosts.workflow.ReplayResult`.

    ``history`` is what ``garrison workflows --store S export ID`` printed: a file path,
    or its JSON already parsed (a dict). ``target`` replays against that workflow
    function (or ``module:qualname``) instead of the one the history names, e.g. after
    it moved. Keep such files in your repository as golden histories: a change that
    would break running workflows then fails a test::

        def test_order_workflow_still_replays():
            garrison.testing.replay("tests/histories/order-17.json")

    A plain function: call it from a sync test, or from a trio test (it then replays
    in a thread with a trio loop of its own, and blocks until done).
    """
    if isinstance(history, History):
        loaded = history
    elif isinstance(history, str | os.PathLike):
        if not os.fspath(history):  # (Path("") is ".", the folder: "cannot read it")
            raise ValueError("history path is empty: give the path of the file "
                             "'garrison workflows export' wrote, or its parsed JSON")
        path = Path(history)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"history {str(path)!r}: cannot read it: {exc.strerror or exc}"
                             ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"history {str(path)!r} is not JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"history {str(path)!r} is not JSON: its byte {exc.start} is "
                             "not UTF-8") from None
        loaded = History.from_json(data, f"history {str(path)!r}")
    else:
        loaded = History.from_json(history)
    __tracebackhide__ = True  # (pytest: the test's line is where it failed, not ours)
    result = _run_trio(replay_history, loaded, target)
    if result.error is not None:
        # (its message says it all: the engine's frames, and their source in pytest's
        # report, would bury it)
        raise result.error.with_traceback(None)
    return result


def _run_trio(fn: Any, *args: Any) -> Any:
    """``trio.run(fn, *args)``; from inside a trio run, in a thread of its own."""
    if not trio.lowlevel.in_trio_run():
        return trio.run(fn, *args)
    out: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            out.append(trio.run(fn, *args))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, name="garrison-replay")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return out[0]
