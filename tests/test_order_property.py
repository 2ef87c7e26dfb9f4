"""Random interleavings of senders and receivers keep per-sender order and lose nothing."""

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import garrison
from garrison import process

plans = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40),  # messages this sender sends
        st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),  # yields
    ),
    min_size=1,
    max_size=5,
)
receiver_pauses = st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(plans=plans, pauses=receiver_pauses, use_topics=st.booleans(), use_timeout=st.booleans())
def test_per_sender_order_and_nothing_lost(plans, pauses, use_topics, use_timeout):
    total = sum(n for n, _ in plans)

    async def receiver():
        box = process.listen("odd") if use_topics else process.inbox()
        general = process.inbox()
        got = []
        i = 0
        while len(got) < total:
            for _ in range(pauses[i % len(pauses)]):
                await trio.lowlevel.checkpoint()
            i += 1
            msg = general.try_receive()
            if msg is None and use_topics:
                msg = box.try_receive()
            if msg is None:
                msg = await (box if use_topics and i % 2 else general).receive(
                    timeout=0.01 if use_timeout else None
                ) if not use_topics else (box.try_receive() or general.try_receive())
            if msg is None:
                await trio.sleep(0.001)
                continue
            got.append((msg.sender, msg.payload))
        return got

    async def sender(to, n, yields, tag):
        for k in range(n):
            for _ in range(yields[k % len(yields)]):
                await trio.lowlevel.checkpoint()
            await process.send(to, "odd" if k % 2 else "even", (tag, k))
        return process.pid()

    async def main():
        r = await process.spawn_monitored(receiver)
        senders = [await process.spawn_monitored(sender, r, n, ys, t)
                   for t, (n, ys) in enumerate(plans)]
        results = {}
        for _ in range(len(senders) + 1):
            ev = await process.events().receive()
            assert ev.ok, ev.error
            results[ev.pid] = ev.result
        return results[r]

    got = garrison.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(got) == total
    by_tag = {}
    for _, (tag, k) in got:
        by_tag.setdefault(tag, []).append(k)
    for tag, (n, _) in enumerate(plans):
        assert sorted(by_tag[tag]) == list(range(n))
        if not use_topics:
            assert by_tag[tag] == list(range(n))
        else:  # within each topic inbox the order is kept
            assert [k for k in by_tag[tag] if k % 2] == sorted(k for k in by_tag[tag] if k % 2)
