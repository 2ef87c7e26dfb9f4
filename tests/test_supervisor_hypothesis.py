"""Random crash schedules against a small model of OTP supervision.

Hypothesis draws the children (restart types), the strategy, ``max_restarts``,
``within`` and a schedule of (delay, child, crash-or-normal-exit) steps. Each
example runs its own ``trio.run`` on ``MockClock(autojump_threshold=0)``, so the
delays are virtual and whole seconds (window edges are hit exactly). After every
step the start/stop log, ``which_children()`` and whether the supervisor still
runs (or gave up, and why) must match the model.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import garrison
from garrison import process
from garrison.supervision import ChildSpec, Supervisor
from garrison.supervision._supervisor import RESTART_TYPES, STRATEGIES


async def child(i: int, log: list[Any]) -> None:
    """Records its start; stops cooperatively on CANCEL (recording it); a "crash"
    message raises, an "exit" message returns."""
    log.append(("start", i))
    command = None
    async with trio.open_nursery() as nursery:

        async def on_cancel() -> None:
            await process.events().receive()
            nursery.cancel_scope.cancel()

        async def on_message() -> None:
            nonlocal command
            command = await process.inbox().receive()
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_cancel)
        nursery.start_soon(on_message)
    if command is None:
        log.append(("stop", i))
    elif command.topic == "crash":
        raise RuntimeError(f"crash {i}")


@attrs.define
class Model:
    """OTP supervision, as plainly as possible."""

    restart: list[str]
    strategy: str
    max_restarts: int
    within: int
    children: list[int] = attrs.Factory(list)  # ids in start order
    running: set[int] = attrs.Factory(set)
    stamps: list[float] = attrs.Factory(list)
    log: list[Any] = attrs.Factory(list)
    gave_up: bool = False

    def start(self) -> None:
        self.children = list(range(len(self.restart)))
        for i in self.children:
            self.log.append(("start", i))
            self.running.add(i)

    def exit(self, now: float, i: int, crash: bool) -> None:
        self.running.discard(i)
        kind = self.restart[i]
        if not (kind == "permanent" or (kind == "transient" and crash)):
            if kind == "temporary":
                self.children.remove(i)
            return
        self.stamps = [t for t in self.stamps if now - t < self.within] + [now]
        if len(self.stamps) > self.max_restarts:
            self.gave_up = True
            self.stop_all()
            return
        pos = self.children.index(i)
        if self.strategy == "one_for_all":
            group = [c for c in self.children if c != i and c in self.running]
        elif self.strategy == "rest_for_one":
            group = [c for c in self.children[pos + 1:] if c in self.running]
        else:
            group = []
        for c in reversed(group):
            self.log.append(("stop", c))
            self.running.discard(c)
        for c in group:
            if self.restart[c] == "temporary":
                self.children.remove(c)
        for c in self.children:
            if c == i or c in group:
                self.log.append(("start", c))
                self.running.add(c)

    def stop_all(self) -> None:
        for c in reversed(self.children):
            if c in self.running:
                self.log.append(("stop", c))
                self.running.discard(c)

    def which(self) -> list[tuple[str, bool, str]]:
        return [(f"c{i}", i in self.running, self.restart[i]) for i in self.children]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    return {
        "restart": draw(st.lists(st.sampled_from(RESTART_TYPES), min_size=n, max_size=n)),
        "strategy": draw(st.sampled_from(STRATEGIES)),
        "max_restarts": draw(st.integers(0, 3)),
        "within": draw(st.integers(1, 6)),
        "steps": draw(st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, n - 1), st.booleans()), max_size=12,
        )),
    }


async def run_scenario(sc: dict[str, Any]) -> None:
    model = Model(sc["restart"], sc["strategy"], sc["max_restarts"], sc["within"])
    log: list[Any] = []
    specs = [ChildSpec(f"c{i}", child, args=(i, log), restart=r)
             for i, r in enumerate(sc["restart"])]
    sup = Supervisor(specs, strategy=sc["strategy"], max_restarts=sc["max_restarts"],
                     within=sc["within"])
    async with garrison.open_node() as node:
        pid = await node.spawn(sup)
        await trio.testing.wait_all_tasks_blocked()
        model.start()
        assert log == model.log
        t0 = trio.current_time()
        for delay, i, crash in sc["steps"]:
            await trio.sleep(delay)
            target = {cid: p for cid, p, _ in sup.which_children()}.get(f"c{i}")
            assert (target is not None) == (i in model.running)
            if target is None:
                continue
            await node.send(target, "crash" if crash else "exit")
            await trio.testing.wait_all_tasks_blocked()
            model.exit(trio.current_time() - t0, i, crash)
            assert log == model.log
            if model.gave_up:
                try:
                    await node.wait(pid)
                except garrison.ProcessError as exc:
                    assert exc.error is not None and exc.error.type == "SupervisorGaveUp"
                    assert f"child 'c{i}' needed restart {sc['max_restarts'] + 1} " \
                           f"within {sc['within']}s" in exc.error.message
                else:
                    raise AssertionError("the supervisor should have given up")
                assert node.stats()["processes"] == 0
                return
            assert [(c, p is not None, r) for c, p, r in sup.which_children()] == model.which()
        # still alive: a CANCEL stops the running children in reverse start order
        async def canceller() -> None:
            await process.cancel(pid, timeout="1m")

        await node.spawn(canceller)
        assert await node.wait(pid) is None
        model.stop_all()
        assert log == model.log


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_supervisor_matches_the_otp_model(sc: dict[str, Any]) -> None:
    trio.run(run_scenario, sc, clock=trio.testing.MockClock(autojump_threshold=0))
