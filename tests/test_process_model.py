"""Generated programs of plain processes against a small model of their semantics.

Hypothesis draws a program: operations by several processes, by the node from
outside and the passing of virtual time. Spawn in its four forms (and a spawn
cancelled or terminated before the child ran), send by pid, by its text form or by
name, ``listen``, ``try_receive``, a blocking ``receive`` with a timeout, reading
another process's inbox, call and reply (twice, or reply and then fail), ``node.call``,
link / unlink / monitor / demonitor (by pid or name, to live, dead and unknown pids),
``trap_links``, returning, raising, being cancelled (reading events or not),
terminated, killed through a link, catching the kill and returning, raising or
lingering shielded for a while, register / unregister / ``lookup``, ``node.wait``
(of an ended, a running and an unknown pid) and ``events()`` (read at once, late, or
waited for). Each example runs in one ``trio.run`` on a manual ``MockClock`` (time
moves only by the program's ``tick``s, so every timeout is hit exactly); the
processes are interpreters driven from outside through trio channels, so their
inboxes hold only what the program sent. After every operation the node is left to
settle and every observable is compared with the model: what the operation returned
or raised, the messages received and their order, the events (in order between
operations; the ones one operation caused, a death spreading along links, in any
order), background work (receives, calls, cancels, terminates, waits) finished or
still waiting, and for every process ``process_info`` (alive, links, monitors,
monitored_by, names, trap_links, queued, events), ``lookup``, and ``node.stats()``
(processes, registered, queued, dead_letters).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import garrison
from garrison import EventKind, Pid, ProcessError, process

TOPICS = ("a", "b")
STOPPED = "STOPPED"
NAMES = ("n0", "n1")
RECV_TIMEOUT = 1
CALL_TIMEOUT = 2
LINGER = 3  # (longer than a cancel's timeout: the cancel's terminate comes meanwhile)


# --------------------------------------------------------------------------- model


@attrs.define
class MProc:
    idx: int
    reads_events: bool
    alive: bool = True
    outcome: tuple[str, Any] | None = None  # ("ok", result) | ("error", type)
    general: list[tuple] = attrs.Factory(list)  # (topic, payload, sender idx|None)
    boxes: dict[str, list[tuple]] = attrs.Factory(dict)
    events: list[tuple[int, tuple]] = attrs.Factory(list)  # (op number, event)
    links: set[int] = attrs.Factory(set)
    monitors: set[int] = attrs.Factory(set)  # whom it monitors
    trap: bool = False
    # a blocking receive in progress: (box, deadline) ; its outcome once done
    recv: tuple[str | None, int] | None = None
    # a call in progress: (callee idx, ref, deadline)
    call: tuple[int, int, int] | None = None
    last_request: tuple[int, int] | None = None  # (caller, ref) of the last request read
    stubborn: str | None = None  # catches its kill, then returns / raises / lingers
    dying: tuple[str, Any] | str | None = None  # killed, lingering: the reason
    linger_until: int = 0


class Model:
    def __init__(self) -> None:
        self.procs: list[MProc] = []
        self.names: dict[str, int] = {}
        self.dead_letters = 0
        self.now = 0
        self.op = 0
        self.refs = itertools.count(1)
        #: results of background work finished by this op: (kind, idx) -> value
        self.finished: dict[tuple[str, int], Any] = {}
        #: cancels in progress: target -> (canceller, or -1 for the node; deadline)
        self.cancels: dict[int, list[tuple[int, int]]] = {}
        #: terminates waiting for their target's end: target -> [terminator or -1]
        self.terms: dict[int, list[int]] = {}
        #: node.call in progress: (callee, ref, deadline)
        self.node_call: tuple[int, int, int] | None = None
        #: node.wait in progress on these live processes
        self.waits: set[int] = set()

    def outcome_of(self, idx: int) -> tuple[str, Any]:
        out = self.procs[idx].outcome
        assert out is not None
        return ("ok", out[1]) if out[0] == "ok" else ("ProcessError", out[1])

    def alive(self) -> list[int]:
        """The processes that run their code (not the ones lingering in their end)."""
        return [p.idx for p in self.procs if p.alive and p.dying is None]

    def spawn(self, parent: int | None, link: bool, monitor: bool, reads_events: bool) -> int:
        p = MProc(len(self.procs), reads_events)
        self.procs.append(p)
        if parent is not None:
            if link:
                p.links.add(parent)
                self.procs[parent].links.add(p.idx)
            if monitor:
                self.procs[parent].monitors.add(p.idx)
        return p.idx

    def deliver(self, to: int, msg: tuple) -> None:
        p = self.procs[to]
        if not p.alive:
            self.dead_letters += 1
            return
        topic = msg[0]
        if topic in p.boxes:
            box: str | None = topic
            p.boxes[topic].append(msg)
        else:
            box = None
            p.general.append(msg)
        if p.recv is not None and p.recv[0] == box:
            self.finished[("recv", to)] = self.take(to, box)
            p.recv = None

    def take(self, idx: int, box: str | None) -> tuple | None:
        p = self.procs[idx]
        q = p.general if box is None else p.boxes.setdefault(box, [])
        if not q:
            return None
        msg = q.pop(0)
        if msg[0] == "q":  # a call's request
            p.last_request = (msg[2], msg[1])
        return msg

    def listen(self, idx: int, topic: str) -> None:
        p = self.procs[idx]
        if topic in p.boxes:
            return
        p.boxes[topic] = [m for m in p.general if m[0] == topic]
        p.general = [m for m in p.general if m[0] != topic]

    def event(self, idx: int, ev: tuple) -> None:
        p = self.procs[idx]
        if p.alive:
            p.events.append((self.op, ev))

    def kill(self, idx: int, reason: tuple[str, Any] | str) -> None:
        """End ``idx`` with ``reason`` (``STOPPED``: a cancel of a process that does
        not read its events, a normal exit) at its next checkpoint. One that lingers
        (catches the cancellation and waits a second, shielded) ends a tick later; the
        first reason wins, except that a real one replaces ``STOPPED``."""
        p = self.procs[idx]
        if not p.alive:
            return
        if p.dying is not None:
            if p.dying == STOPPED and reason != STOPPED:
                p.dying = reason
            return
        if p.stubborn == "linger":
            p.dying = reason
            p.linger_until = self.now + LINGER
            p.recv = None  # (its tasks are cancelled: what they waited for is dropped)
            p.call = None
            return
        self.die(idx, self.kill_outcome(p, reason))

    @staticmethod
    def kill_outcome(p: MProc, reason: tuple[str, Any] | str) -> tuple[str, Any]:
        if reason != STOPPED:
            assert isinstance(reason, tuple)
            return reason
        return {None: ("ok", None), "return": ("ok", "caught"), "linger": ("ok", "caught"),
                "raise": ("error", "ValueError")}[p.stubborn]

    def die(self, idx: int, outcome: tuple[str, Any]) -> None:
        todo = [(idx, outcome)]
        while todo:
            i, out = todo.pop(0)
            p = self.procs[i]
            if not p.alive:
                continue
            for by in self.terms.pop(i, []):
                self.finished[("term", by)] = ("ok", None)
            p.alive = False
            p.outcome = out
            p.general.clear()
            p.boxes.clear()
            p.events.clear()
            p.recv = None
            p.call = None
            for by, _ in self.cancels.pop(i, []):
                self.finished[("cancel", by)] = ("ok", None)
            if i in self.waits:
                self.waits.discard(i)
                self.finished[("wait", i)] = self.outcome_of(i)
            if self.node_call is not None and self.node_call[0] == i:
                self.finished[("ncall", -1)] = ("ProcessError", "noproc" if out[0] == "ok"
                                                else out[1])
                self.node_call = None
            for name in [n for n, h in self.names.items() if h == i]:
                del self.names[name]
            ok = out[0] == "ok"
            error = None if ok else out[1]
            for w in self.procs:
                if w.alive and i in w.monitors:
                    w.monitors.discard(i)
                    self.event(w.idx, ("EXIT", i, ok, error, out[1] if ok else None))
                if w.alive and w.call is not None and w.call[0] == i:
                    self.finished[("call", w.idx)] = ("ProcessError", error or "noproc")
                    w.call = None
            for j in sorted(p.links):
                other = self.procs[j]
                other.links.discard(i)
                if not other.alive or ok:
                    continue
                if other.trap:
                    self.event(j, ("LINK_DOWN", i, False, error, None))
                else:
                    todo.append((j, ("error", "LinkedProcessFailed")))
            p.links.clear()
            p.monitors.clear()
            # (the killed ones end after this one's notifications are out)
            for j, reason in todo[:]:
                todo.remove((j, reason))
                self.kill(j, reason)

    def tick(self) -> None:
        self.now += 1
        for p in self.procs:
            if p.recv is not None and p.recv[1] <= self.now:
                self.finished[("recv", p.idx)] = None
                p.recv = None
            if p.call is not None and p.call[2] <= self.now:
                self.finished[("call", p.idx)] = ("TimeoutError", None)
                p.call = None
        if self.node_call is not None and self.node_call[2] <= self.now:
            self.finished[("ncall", -1)] = ("TimeoutError", None)
            self.node_call = None
        for target, pending in sorted(self.cancels.items()):
            if min(deadline for _, deadline in pending) <= self.now:
                self.kill(target, ("error", "Terminated"))
        for p in self.procs:
            if p.alive and p.dying is not None and p.linger_until <= self.now:
                self.die(p.idx, self.kill_outcome(p, p.dying))


# --------------------------------------------------------------------------- runtime


class Ended(Exception):
    pass


def only_cancelled(e: BaseException) -> bool:
    if isinstance(e, BaseExceptionGroup):
        return all(only_cancelled(x) for x in e.exceptions)
    return isinstance(e, trio.Cancelled)


async def actor(ctl: trio.MemoryReceiveChannel, stubborn: dict[str, str]) -> Any:
    """Runs what the driver sends: ``(fn, slot)`` runs ``await fn(nursery)`` and puts
    the outcome in ``slot`` (a one-element list); ``fn`` raising ``Ended`` ends the
    process the way it says. A ``stubborn`` one catches trio's cancellation and
    returns or raises (a kill is not refused: its exit stays the kill's)."""
    ending: tuple[str, Any] | None = None
    try:
        async with trio.open_nursery() as nursery:
            async for fn, slot in ctl:
                try:
                    slot.append(("ok", await fn(nursery)))
                except Ended as e:
                    ending = e.args[0]
                    nursery.cancel_scope.cancel()
                    break
                except Exception as e:
                    slot.append(("raise", describe(e)))
    except BaseException as e:
        if "how" not in stubborn or not only_cancelled(e):
            raise
        if stubborn["how"] == "linger":
            with trio.CancelScope(shield=True):
                await trio.sleep(LINGER)
        ending = ("raise" if stubborn["how"] == "raise" else "return", "caught")
    assert ending is not None
    how, value = ending
    if how == "raise":
        raise ValueError(value)
    return value


def describe(e: BaseException) -> tuple[str, Any]:
    if isinstance(e, ProcessError):
        return ("ProcessError", e.error.type if e.error is not None else None)
    return (type(e).__name__, None)


def msg_tuple(msg: Any, pids: dict[Pid, int]) -> tuple | None:
    if msg is None:
        return None
    return (msg.topic, msg.payload, None if msg.sender is None else pids.get(msg.sender))


def event_tuple(ev: Any, pids: dict[Pid, int]) -> tuple:
    kind = {EventKind.EXIT: "EXIT", EventKind.LINK_DOWN: "LINK_DOWN",
            EventKind.CANCEL: "CANCEL"}[ev.kind]
    return (kind, pids.get(ev.pid), ev.ok, None if ev.error is None else ev.error.type,
            ev.result if ev.ok else None)


# --------------------------------------------------------------------------- programs

sel = st.integers(min_value=0, max_value=7)
maybe = st.none() | sel
ops = st.one_of(
    st.tuples(st.just("spawn"), maybe, st.sampled_from(["plain", "linked", "monitored", "both"]),
              st.booleans()),
    st.tuples(st.just("spawn_kill"), sel,
              st.sampled_from(["plain", "linked", "monitored", "both"]),
              st.sampled_from(["cancel", "terminate"])),
    st.tuples(st.just("send"), maybe, sel, st.sampled_from(TOPICS)),
    st.tuples(st.just("stubborn"), sel, st.sampled_from(["return", "raise", "linger"])),
    st.tuples(st.just("foreign_recv"), sel, sel),
    st.tuples(st.just("await_event"), sel),
    st.tuples(st.just("send_name"), maybe, st.sampled_from(NAMES), st.sampled_from(TOPICS)),
    st.tuples(st.just("listen"), sel, st.sampled_from(TOPICS)),
    st.tuples(st.just("try_recv"), sel, st.sampled_from((None, *TOPICS))),
    st.tuples(st.just("recv"), sel, st.sampled_from((None, *TOPICS))),
    st.tuples(st.just("tick")),
    st.tuples(st.just("call"), sel, sel, st.sampled_from([CALL_TIMEOUT, CALL_TIMEOUT, 0])),
    st.tuples(st.just("reply"), sel, st.sampled_from(["once", "again", "end"])),
    st.tuples(st.sampled_from(["link", "unlink", "monitor", "demonitor"]), sel, sel),
    st.tuples(st.just("trap"), sel, st.booleans()),
    st.tuples(st.just("end"), sel, st.sampled_from(["return", "raise"])),
    st.tuples(st.just("terminate"), maybe, sel),
    st.tuples(st.just("events"), sel),
    st.tuples(st.just("register"), sel, st.sampled_from(NAMES)),
    st.tuples(st.just("unregister"), sel, st.sampled_from(NAMES)),
    st.tuples(st.just("wait"), sel),
    st.tuples(st.just("cancel"), maybe, sel),
    st.tuples(st.just("node_call"), sel),
    st.tuples(st.sampled_from(["link_name", "monitor_name", "unlink_name", "demonitor_name"]),
              sel, st.sampled_from(NAMES)),
)
#: every program starts with three processes (two read their events), so that most
#: operations have someone to act on
START = [("spawn", None, "plain", True), ("spawn", None, "plain", True),
         ("spawn", None, "plain", False)]
programs = st.lists(ops, min_size=5, max_size=60).map(lambda p: START + p)


class Mismatch(AssertionError):
    pass


async def run_program(program: list[tuple], clock: trio.testing.MockClock) -> list[str]:
    model = Model()
    pids: list[Pid] = []
    index: dict[Pid, int] = {}
    ctls: list[trio.MemorySendChannel] = []
    slots: dict[tuple[str, int], list] = {}  # background work in progress
    trace: list[str] = []
    requests: dict[int, Any] = {}
    stubborns: list[dict[str, str]] = []
    inboxes: dict[Pid, Any] = {}  # the last call request each process read

    def keep(idx: int, msg: Any) -> Any:
        if msg is not None and msg.topic == "q":
            requests[idx] = msg
        return msg_tuple(msg, index)

    def check(what: str, got: Any, want: Any) -> None:
        if got != want:
            raise Mismatch(f"{what}: runtime {got!r} != model {want!r}\ntrace:\n"
                           + "\n".join(trace))

    async def settle() -> None:
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()

    async def run_in(idx: int, fn: Any) -> list:
        slot: list = []
        ctls[idx].send_nowait((fn, slot))
        await settle()
        return slot

    def alive_sel(s: int) -> int | None:
        alive = model.alive()
        return alive[s % len(alive)] if alive else None

    def any_sel(s: int) -> int | None:
        return s % len(model.procs) if model.procs else None

    async with garrison.open_node() as node, trio.open_nursery() as bg_nursery:

        async def spawn(parent: int | None, mode: str, reads_events: bool,
                        then: str | None = None) -> int:
            send, recv = trio.open_memory_channel[Any](float("inf"))
            link = mode in ("linked", "both")
            mon = mode in ("monitored", "both")

            stubborn: dict[str, str] = {}

            async def child_code(ctl: Any) -> Any:
                inboxes[process.pid()] = process.inbox()
                if reads_events:
                    process.events()
                return await actor(ctl, stubborn)

            if parent is None:
                pid = await node.spawn(child_code, recv)
            else:
                fn = {(False, False): process.spawn, (True, False): process.spawn_linked,
                      (False, True): process.spawn_monitored,
                      (True, True): process.spawn_linked_monitored}[(link, mon)]

                holder: list[Pid] = []

                async def do(_n: Any) -> None:
                    holder.append(await fn(child_code, recv))
                    if then == "cancel":
                        await process.cancel(holder[0], timeout=CALL_TIMEOUT)
                    elif then == "terminate":
                        await process.terminate(holder[0])

                await run_in(parent, do)
                pid = holder[0]
            idx = model.spawn(parent, link, mon, reads_events)
            if then == "cancel":  # before it ran: it does not run, a normal exit
                model.die(idx, ("ok", None))
            elif then == "terminate":
                model.die(idx, ("error", "Terminated"))
            pids.append(pid)
            index[pid] = idx
            ctls.append(send)
            stubborns.append(stubborn)
            await settle()
            return idx

        def to_pid(idx: int) -> Any:
            # every third operation names the process by its pid's text form
            return str(pids[idx]) if model.op % 3 == 0 else pids[idx]

        # two pids that name no process: one of the processes host, one of a host
        # this node does not have (a dead pid, as far as anyone can tell: noproc)
        for ghost in (Pid("processes", "ghost.1"), Pid("elsewhere", "ghost.2")):
            p = MProc(len(model.procs), False, alive=False, outcome=("error", "noproc"))
            model.procs.append(p)
            pids.append(ghost)
            index[ghost] = p.idx
            ctls.append(trio.open_memory_channel[Any](0)[0])
            stubborns.append({})

        try:
            for op in program:
                model.op += 1
                model.finished = {}
                kind = op[0]
                desc: str | None = None
                if kind == "spawn":
                    parent = None if op[1] is None else alive_sel(op[1])
                    if op[1] is not None and parent is None:
                        continue
                    mode = op[2] if parent is not None else "plain"
                    idx = await spawn(parent, mode, op[3])
                    desc = f"{idx} = spawn by {parent} {mode} reads_events={op[3]}"
                elif kind == "stubborn":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue
                    stubborns[idx]["how"] = op[2]
                    model.procs[idx].stubborn = op[2]
                    desc = f"stubborn {idx} {op[2]}"
                elif kind == "foreign_recv":
                    a = alive_sel(op[1])
                    b = any_sel(op[2])
                    if a is None or b is None or a == b or pids[b] not in inboxes:
                        continue

                    async def do(_n: Any, box: Any = inboxes[pids[b]]) -> Any:
                        return box.try_receive()

                    got = await run_in(a, do)
                    desc = f"{a} reads the inbox of {b}"
                    check(desc, got, [("raise", ("RuntimeError", None))])
                elif kind == "await_event":
                    idx = alive_sel(op[1])
                    if idx is None or ("event", idx) in slots:
                        continue
                    slot = []
                    slots[("event", idx)] = slot

                    async def do(nursery: Any, slot: list = slot) -> None:
                        async def bg() -> None:
                            ev = await process.events().receive()
                            # a name is released before its holder's EXIT is delivered
                            held = [n for n in NAMES if process.lookup(n) == ev.pid]
                            slot.append(("held", held))
                            slot.append(ev)  # (read once the driver knows every pid)

                        nursery.start_soon(bg)

                    model.procs[idx].reads_events = True
                    await run_in(idx, do)
                    desc = f"await_event {idx}"
                elif kind == "spawn_kill":
                    parent = alive_sel(op[1])
                    if parent is None:
                        continue
                    idx = await spawn(parent, op[2], True, op[3])
                    desc = f"{idx} = spawn by {parent} {op[2]}, then {op[3]} at once"
                elif kind in ("send", "send_name"):
                    frm = None if op[1] is None else alive_sel(op[1])
                    if op[1] is not None and frm is None:
                        continue
                    if kind == "send":
                        to = any_sel(op[2])
                        if to is None:
                            continue
                        dest: Any = to_pid(to)
                        target: int | None = to
                    else:
                        dest = op[2]
                        target = model.names.get(dest)
                    payload = model.op
                    topic = op[3]
                    if frm is None:
                        try:
                            await node.send(dest, topic, payload)
                            got = ("ok", None)
                        except Exception as e:
                            got = ("raise", describe(e))
                        await settle()
                    else:
                        async def do(_n: Any, dest: Any = dest, topic: str = topic,
                                     payload: int = payload) -> None:
                            await process.send(dest, topic, payload)

                        got = (await run_in(frm, do))[0]
                    if target is None:
                        want: Any = ("raise", ("NoSuchProcess", None))
                    else:
                        want = ("ok", None)
                        model.deliver(target, (topic, payload, frm))
                    desc = f"send {frm} -> {dest} {topic} {payload}"
                    check(desc, got, want)
                elif kind == "listen":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue

                    async def do(_n: Any, topic: str = op[2]) -> bool:
                        return process.listen(topic) is process.listen(topic)

                    got = await run_in(idx, do)
                    check(f"listen {idx} twice", got, [("ok", True)])
                    model.listen(idx, op[2])
                    desc = f"listen {idx} {op[2]}"
                elif kind == "try_recv":
                    idx = alive_sel(op[1])
                    if idx is None or model.procs[idx].recv is not None:
                        continue
                    box = op[2]

                    async def do(_n: Any, box: str | None = box, idx: int = idx) -> Any:
                        ib = process.inbox() if box is None else process.listen(box)
                        return keep(idx, ib.try_receive())

                    if box is not None:
                        model.listen(idx, box)
                    got = (await run_in(idx, do))[0]
                    desc = f"try_recv {idx} {box}"
                    check(desc, got, ("ok", model.take(idx, box)))
                elif kind == "recv":
                    idx = alive_sel(op[1])
                    if idx is None or model.procs[idx].recv is not None:
                        continue
                    box = op[2]
                    slot: list = []
                    slots[("recv", idx)] = slot

                    async def do(nursery: Any, box: str | None = box, slot: list = slot,
                                 idx: int = idx) -> None:
                        ib = process.inbox() if box is None else process.listen(box)

                        async def bg() -> None:
                            slot.append(keep(idx, await ib.receive(timeout=RECV_TIMEOUT)))

                        nursery.start_soon(bg)

                    if box is not None:
                        model.listen(idx, box)
                    await run_in(idx, do)
                    msg = model.take(idx, box)
                    if msg is not None:
                        model.finished[("recv", idx)] = msg
                    else:
                        model.procs[idx].recv = (box, model.now + RECV_TIMEOUT)
                    desc = f"recv {idx} {box} (blocking, timeout {RECV_TIMEOUT})"
                elif kind == "tick":
                    clock.jump(1)
                    await settle()
                    model.tick()
                    desc = f"tick -> {model.now}"
                elif kind == "call":
                    frm = alive_sel(op[1])
                    to = any_sel(op[2]) if op[2] % 3 == 0 else alive_sel(op[2])
                    if frm is None or to is None or model.procs[frm].call is not None:
                        continue
                    slot = []
                    slots[("call", frm)] = slot

                    dest_pid = to_pid(to)
                    async def do(nursery: Any, dest: Pid = dest_pid, slot: list = slot,
                                 payload: int = model.op, timeout: int = op[3]) -> None:
                        async def bg() -> None:
                            try:
                                slot.append(("ok", await process.call(dest, "q", payload,
                                                                      timeout=timeout)))
                            except Exception as e:
                                slot.append(describe(e))

                        nursery.start_soon(bg)

                    await run_in(frm, do)
                    ref = model.op
                    if model.procs[to].alive and op[3] == 0:  # sent, and no time to answer
                        model.deliver(to, ("q", ref, frm))
                        model.finished[("call", frm)] = ("TimeoutError", None)
                    elif model.procs[to].alive:
                        model.procs[frm].call = (to, ref, model.now + op[3])
                        model.deliver(to, ("q", ref, frm))
                    else:
                        model.finished[("call", frm)] = ("ProcessError", "noproc")
                    desc = f"call {frm} -> {to} ref {ref}"
                elif kind == "reply":
                    # (a process that holds a request, if any does)
                    running = model.alive()
                    holding = [p.idx for p in model.procs if p.idx in running and p.recv is None
                               and (p.last_request is not None
                                    or any(m[0] == "q" for m in p.general))]
                    idx = holding[op[1] % len(holding)] if holding else alive_sel(op[1])
                    if idx is None or model.procs[idx].recv is not None:
                        continue
                    if model.procs[idx].last_request is None:
                        # serve: read the general inbox up to the next request
                        async def serve(_n: Any, idx: int = idx) -> list:
                            out = []
                            while (m := process.inbox().try_receive()) is not None:
                                out.append(keep(idx, m))
                                if m.topic == "q":
                                    break
                            return out

                        got = (await run_in(idx, serve))[0]
                        want_l = []
                        while (m := model.take(idx, None)) is not None:
                            want_l.append(m)
                            if m[0] == "q":
                                break
                        check(f"serve {idx}", got, ("ok", want_l))
                        if model.procs[idx].last_request is None:
                            trace.append(f"{model.op}: serve {idx}: no request")
                            continue
                    caller, ref = model.procs[idx].last_request
                    again = op[2] == "again"  # keep the request: a second reply is dropped
                    if not again:
                        model.procs[idx].last_request = None
                    desc = f"reply {idx} to {caller} ref {ref} ({op[2]})"

                    request = requests[idx] if again else requests.pop(idx)

                    async def do(_n: Any, req: Any = request, ref: int = ref,
                                 end: bool = op[2] == "end") -> None:
                        await req.reply(("re", ref))
                        if end:  # the reply is out before its end
                            raise Ended(("raise", "after reply"))

                    got = await run_in(idx, do)
                    if op[2] != "end":
                        check(desc, got, [("ok", None)])
                    if caller is None and model.node_call is not None \
                            and model.node_call[1] == ref:
                        model.finished[("ncall", -1)] = ("ok", ("re", ref))
                        model.node_call = None
                    c = model.procs[caller] if caller is not None else None
                    if c is not None and c.alive and c.call is not None and c.call[1] == ref:
                        model.finished[("call", caller)] = ("ok", ("re", ref))
                        c.call = None
                    if op[2] == "end":
                        model.die(idx, ("error", "ValueError"))
                elif kind in ("link", "unlink", "monitor", "demonitor"):
                    a = alive_sel(op[1])
                    b = any_sel(op[2])
                    if a is None or b is None:
                        continue
                    fn = getattr(process, kind)

                    dest_pid = to_pid(b)
                    async def do(_n: Any, fn: Any = fn, dest: Pid = dest_pid) -> None:
                        fn(dest)

                    got = (await run_in(a, do))
                    desc = f"{kind} {a} {b}"
                    pa, pb = model.procs[a], model.procs[b]
                    if a != b:
                        if kind == "link":
                            if pb.alive:
                                pa.links.add(b)
                                pb.links.add(a)
                            elif pa.trap:
                                model.event(a, ("LINK_DOWN", b, False, "noproc", None))
                            else:
                                model.kill(a, ("error", "LinkedProcessFailed"))
                        elif kind == "unlink":
                            pa.links.discard(b)
                            pb.links.discard(a)
                        elif kind == "monitor":
                            if pb.alive:
                                pa.monitors.add(b)
                            else:
                                model.event(a, ("EXIT", b, False, "noproc", None))
                        else:
                            pa.monitors.discard(b)
                    if model.procs[a].alive:
                        check(desc, got, [("ok", None)])
                elif kind == "trap":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue

                    async def do(_n: Any, on: bool = op[2]) -> None:
                        process.set_options(trap_links=on)

                    await run_in(idx, do)
                    model.procs[idx].trap = op[2]
                    desc = f"trap {idx} {op[2]}"
                elif kind == "end":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue
                    how = op[2]

                    async def do(_n: Any, how: str = how, idx: int = idx) -> None:
                        raise Ended((how, f"r{idx}"))

                    await run_in(idx, do)
                    model.die(idx, ("ok", f"r{idx}") if how == "return"
                              else ("error", "ValueError"))
                    desc = f"end {idx} {how}"
                elif kind == "terminate":
                    by = None if op[1] is None else alive_sel(op[1])
                    to = any_sel(op[2])
                    if (op[1] is not None and by is None) or to is None:
                        continue
                    bykey = -1 if by is None else by
                    if ("term", bykey) in slots:
                        continue
                    slot = []
                    slots[("term", bykey)] = slot

                    dest_pid = to_pid(to)
                    async def terminator(dest: Pid = dest_pid, slot: list = slot) -> None:
                        try:
                            await process.terminate(dest)
                            slot.append(("ok", None))
                        except Exception as e:
                            slot.append(describe(e))

                    if by is None:
                        await node.spawn(terminator)
                        await settle()
                    else:
                        await run_in(by, lambda n, t=terminator: n.start_soon(t))
                    if model.procs[to].alive:
                        model.terms.setdefault(to, []).append(bykey)
                    else:
                        model.finished[("term", bykey)] = ("ok", None)
                    model.kill(to, ("error", "Terminated"))
                    desc = f"terminate by {by} {to}"
                elif kind == "events":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue
                    # (one that did not read its events yet starts now: it loses nothing)
                    model.procs[idx].reads_events = True

                    async def do(_n: Any) -> list:
                        out = []
                        while (ev := process.events().try_receive()) is not None:
                            out.append(event_tuple(ev, index))
                        return out

                    got = (await run_in(idx, do))[0][1]
                    want_evs = model.procs[idx].events
                    model.procs[idx].events = []
                    desc = f"events {idx}"
                    check_events(desc, got, want_evs, check)
                elif kind == "register":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue

                    async def do(_n: Any, name: str = op[2]) -> None:
                        process.register(name)

                    got = await run_in(idx, do)
                    holder = model.names.get(op[2])
                    if holder is not None and holder != idx:
                        want = [("raise", ("ValueError", None))]
                    else:
                        want = [("ok", None)]
                        model.names[op[2]] = idx
                    desc = f"register {idx} {op[2]}"
                    check(desc, got, want)
                elif kind == "unregister":
                    idx = alive_sel(op[1])
                    if idx is None:
                        continue

                    async def do(_n: Any, name: str = op[2]) -> None:
                        process.unregister(name)

                    got = await run_in(idx, do)
                    if model.names.get(op[2]) == idx:
                        del model.names[op[2]]
                    desc = f"unregister {idx} {op[2]}"
                    check(desc, got, [("ok", None)])
                elif kind == "cancel":
                    by = None if op[1] is None else alive_sel(op[1])
                    to = any_sel(op[2])
                    bykey = -1 if by is None else by
                    if ((op[1] is not None and by is None) or to is None
                            or ("cancel", bykey) in slots):
                        continue
                    slot = []
                    slots[("cancel", bykey)] = slot

                    dest_pid = to_pid(to)
                    async def canceller(dest: Pid = dest_pid, slot: list = slot) -> None:
                        try:
                            await process.cancel(dest, timeout=CALL_TIMEOUT)
                            slot.append(("ok", None))
                        except Exception as e:
                            slot.append(describe(e))

                    if by is None:
                        await node.spawn(canceller)
                        await settle()
                    else:
                        await run_in(by, lambda n, c=canceller: n.start_soon(c))
                    pt = model.procs[to]
                    if not pt.alive:
                        model.finished[("cancel", bykey)] = ("ok", None)
                    elif pt.reads_events:
                        model.event(to, ("CANCEL", by, True, None, None))
                        if by == to:  # not kept waiting for its own end
                            model.finished[("cancel", bykey)] = ("ok", None)
                            bykey = -2
                        model.cancels.setdefault(to, []).append((bykey, model.now + CALL_TIMEOUT))
                    else:  # stopped at its next checkpoint: a normal exit (unless its
                        # cleanup raises: that is how it ended)
                        deadline = model.now + CALL_TIMEOUT
                        model.cancels.setdefault(to, []).append((bykey, deadline))
                        model.kill(to, STOPPED)
                    desc = f"cancel by {by} {to}"
                elif kind == "node_call":
                    to = any_sel(op[1])
                    if to is None or model.node_call is not None:
                        continue
                    slot = []
                    slots[("ncall", -1)] = slot

                    dest_pid = to_pid(to)
                    async def ncall(dest: Pid = dest_pid, slot: list = slot,
                                    payload: int = model.op) -> None:
                        try:
                            slot.append(("ok", await node.call(dest, "q", payload,
                                                               timeout=CALL_TIMEOUT)))
                        except Exception as e:
                            slot.append(describe(e))

                    bg_nursery.start_soon(ncall)
                    await settle()
                    ref = model.op
                    if model.procs[to].alive:
                        model.node_call = (to, ref, model.now + CALL_TIMEOUT)
                        model.deliver(to, ("q", ref, None))
                    else:
                        model.finished[("ncall", -1)] = ("ProcessError", "noproc")
                    desc = f"node.call -> {to} ref {ref}"
                elif kind.endswith("_name"):
                    a = alive_sel(op[1])
                    if a is None:
                        continue
                    what = kind[:-len("_name")]
                    name = op[2]
                    fn = getattr(process, what)

                    async def do(_n: Any, fn: Any = fn, name: str = name) -> None:
                        fn(name)

                    got = await run_in(a, do)
                    desc = f"{what} {a} {name}"
                    b = model.names.get(name)
                    if b is None:
                        want = [("raise", ("NoSuchProcess", None))] if what in ("link", "monitor") \
                            else [("ok", None)]
                        check(desc, got, want)
                    elif a != b:
                        pa, pb = model.procs[a], model.procs[b]
                        if what == "link":
                            pa.links.add(b)
                            pb.links.add(a)
                        elif what == "unlink":
                            pa.links.discard(b)
                            pb.links.discard(a)
                        elif what == "monitor":
                            pa.monitors.add(b)
                        else:
                            pa.monitors.discard(b)
                        check(desc, got, [("ok", None)])
                    else:
                        check(desc, got, [("ok", None)])
                elif kind == "wait" and model.procs and model.procs[any_sel(op[1]) or 0].alive \
                        and any_sel(op[1]) not in model.waits and op[1] % 2:
                    idx = any_sel(op[1])
                    slot = []
                    slots[("wait", idx)] = slot

                    dest_pid = to_pid(idx)
                    async def waiter(dest: Pid = dest_pid, slot: list = slot) -> None:
                        try:
                            slot.append(("ok", await node.wait(dest)))
                        except Exception as e:
                            slot.append(describe(e))

                    bg_nursery.start_soon(waiter)
                    await settle()
                    model.waits.add(idx)
                    desc = f"node.wait {idx} (in the background)"
                elif kind == "wait":
                    idx = any_sel(op[1])
                    if idx is None or model.procs[idx].alive:
                        # an unknown pid instead
                        try:
                            await node.wait(Pid("processes", "nobody.1"))
                            got = ("ok", None)
                        except Exception as e:
                            got = describe(e)
                        desc = "wait unknown"
                        check(desc, got, ("ProcessError", "noproc"))
                    else:
                        try:
                            got = ("ok", await node.wait(to_pid(idx)))
                        except Exception as e:
                            got = describe(e)
                        out = model.procs[idx].outcome
                        assert out is not None
                        want = ("ok", out[1]) if out[0] == "ok" else ("ProcessError", out[1])
                        desc = f"wait {idx}"
                        check(desc, got, want)
                trace.append(f"{model.op}: {desc}")
                await settle()
                # background work: what finished must be what the model finished
                for key in list(slots):  # (a lingering process's tasks were cancelled)
                    if key[1] >= 0 and key[0] in ("call", "recv", "cancel", "term", "event") \
                            and model.procs[key[1]].dying is not None:
                        del slots[key]
                for key, slot in list(slots.items()):
                    if key[0] == "event":
                        p = model.procs[key[1]]
                        if not p.alive:
                            del slots[key]
                        elif slot:
                            del slots[key]
                            slot[1] = event_tuple(slot[1], index)
                            check(f"names of {slot[1][1]} when its event came", slot[0],
                                  ("held", []) if slot[1][0] == "EXIT" else slot[0])
                            first = [ev for o, ev in p.events if o == p.events[0][0]] \
                                if p.events else []
                            check(f"event of {key[1]}: {slot[1]} (one of {first})",
                                  slot[1] in first, True)
                            p.events.remove(next(x for x in p.events if x[1] == slot[1]))
                        else:
                            check(f"event of {key[1]}", "<still waiting>",
                                  "<still waiting>" if not p.events else p.events)
                        continue
                    if slot:
                        del slots[key]
                        got = slot[0]
                        if key[0] in ("call", "ncall") and got[0] == "ok":
                            got = ("ok", tuple(got[1]))
                        check(f"{key[0]} of {key[1]} finished", got,
                              model.finished.get(key, "<still running>"))
                    elif key[1] >= 0 and key[0] in ("call", "recv", "cancel", "term") \
                            and not model.procs[key[1]].alive:
                        del slots[key]
                    else:
                        check(f"{key[0]} of {key[1]}", "<still running>",
                              model.finished.get(key, "<still running>"))
                # the state of every process
                for p in model.procs:
                    info = node.process_info(pids[p.idx])
                    check(f"alive {p.idx}", info.alive, p.alive)
                    if not p.alive:
                        continue
                    check(f"links {p.idx}", sorted(index[x] for x in info.links), sorted(p.links))
                    check(f"monitors {p.idx}", sorted(index[x] for x in info.monitors),
                          sorted(p.monitors))
                    check(f"monitored_by {p.idx}", sorted(index[x] for x in info.monitored_by),
                          sorted(w.idx for w in model.procs if w.alive and p.idx in w.monitors))
                    check(f"names {p.idx}", sorted(info.names),
                          sorted(n for n, h in model.names.items() if h == p.idx))
                    check(f"trap {p.idx}", info.trap_links, p.trap)
                    check(f"queued {p.idx}", info.queued,
                          len(p.general) + sum(len(b) for b in p.boxes.values()))
                    check(f"events {p.idx}", info.events, len(p.events))
                for name in NAMES:
                    got_pid = node.lookup(name)
                    check(f"lookup {name}", None if got_pid is None else index[got_pid],
                          model.names.get(name))
                stats = node.stats()
                check("dead_letters", stats["dead_letters"], model.dead_letters)
                check("processes", stats["processes"],
                      sum(p.alive for p in model.procs) + (("cancel", -1) in slots)
                      + (("term", -1) in slots))
                check("registered", stats["registered"], len(model.names))
                check("queued", stats["queued"], sum(
                    len(p.general) + sum(len(b) for b in p.boxes.values()) + len(p.events)
                    for p in model.procs if p.alive))
        finally:  # (lingering processes end on the stop: let time run)
            clock.autojump_threshold = 0
            bg_nursery.cancel_scope.cancel()
    return trace


def check_events(desc: str, got: list, want: list[tuple[int, tuple]], check: Any) -> None:
    check(desc + " (count)", len(got), len(want))
    i = 0
    for _op, group in itertools.groupby(want, key=lambda e: e[0]):
        batch = [e for _, e in group]
        check(desc, Counter(got[i:i + len(batch)]), Counter(batch))
        i += len(batch)


def run(program: list[tuple]) -> list[str]:
    clock = trio.testing.MockClock()
    return trio.run(run_program, program, clock, clock=clock)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_processes_follow_the_model(program: list[tuple]) -> None:
    run(program)
