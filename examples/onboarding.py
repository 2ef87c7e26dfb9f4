"""User onboarding: send a verification email, wait for the ``verified`` signal with a
deadline, remind once, and give up after three days.

Run it:  python examples/onboarding.py [STORE.db]

The wait is an inbox receive raced with a durable timer in ``workflow.first``: the
receive's place in the journal is taken where it is created, and ``first`` records
which one won, so a replay after a crash takes the same branch. A signal sent while
no node runs (``garrison workflows --store DB signal ID verified '{}'``) waits in the
store and is picked up on the next start.

The demo runs on trio's virtual clock, so the days pass in no real time; a real
application runs ``trio.run(main)``.
"""

from __future__ import annotations

import sys

import trio
import trio.testing

import garrison
from garrison import process, workflow


@garrison.activity
async def send_email(user: str, template: str) -> None:
    print(f"  [{user}] email: {template}")


@garrison.activity
async def activate(user: str) -> str:
    return f"{user} is active"


async def onboarding(user: str) -> str:
    """Verify ``user``'s email within 3 days (one reminder after 1 day)."""
    await send_email(user, "please verify your address")
    workflow.set_state("step", "waiting for verification")
    inbox = process.listen("verified")
    for wait, then in (("1d", "reminder"), ("2d", "give up")):
        verified = inbox.receive()
        deadline = workflow.timer(wait)
        if await workflow.first(verified, deadline) is verified:
            msg = await verified
            workflow.set_state("step", "verified")
            return await activate(f"{user} (verified via {msg.payload['via']})")
        if then == "reminder":
            await send_email(user, "reminder: please verify your address")
    workflow.set_state("step", "expired")
    await send_email(user, "your sign-up expired")
    return f"{user} never verified"


async def main(store: str | None = None) -> list[str]:
    results = []
    async with garrison.open_node(store=store) as node:
        pid = await node.start_workflow(onboarding, "ann@example.com", id="onboard-ann")
        handle = node.workflow("onboard-ann")
        while handle.status() in ("pending", "running"):  # (a second run: completed)
            await trio.sleep(0.001)
        if handle.status() == "waiting":
            await trio.sleep(30 * 3600)  # she verifies after 30 hours (after the reminder)
            print(f"  [ann@example.com] {handle.state('step')!r}, then the link is clicked")
            await node.send(pid, "verified", {"via": "link"})
        results.append(await handle.result())
        print(f"  {results[-1]}")

        await node.start_workflow(onboarding, "bob@example.com", id="onboard-bob")
        results.append(await node.workflow("onboard-bob").result())
        # (from its stored times, not this run's clock: a second run reads the first's)
        (bob,) = [w for w in node.workflows() if w.workflow_id == "onboard-bob"]
        print(f"  {results[-1]} (after {(bob.updated - bob.created).days} days)")
        print("history of onboard-ann:",
              [(r.seq, r.kind, r.name) for r in handle.history()])
    return results


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None,
             clock=trio.testing.MockClock(autojump_threshold=0))
