"""A workflow survives ``kill -9``: this script kills its own child process and resumes.

Run it:  python examples/crash_demo.py

The parent starts a child process that runs a three-step workflow on a store file;
once step 1 is recorded and the workflow is in its durable 2-second sleep, the parent
sends the child SIGKILL (``kill -9``). A second child opens the same store: the node
resumes the workflow at once, step 1 is not repeated (its outcome is replayed from
the journal), only the rest of the sleep is slept, and step 2 and 3 run.

The workflow logs with ``workflow.logger``: the second child runs the workflow's code
from the top again, but what it logged before the crash is not logged twice (a
``print`` would be).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

import trio

import garrison
from garrison import workflow


@garrison.activity
async def step(n: int) -> str:
    print(f"[child {os.getpid()}] step {n} runs", flush=True)
    return f"step {n} done"


async def three_steps() -> list[str]:
    workflow.logger.info("workflow started")  # once, though the code runs twice
    done = [await step(1)]
    workflow.logger.info("step 1 recorded, sleeping")
    await workflow.sleep("2s")  # durable: the deadline is in the journal
    workflow.logger.info("awake: steps 2 and 3")
    done.append(await step(2))
    done.append(await step(3))
    return done


async def child(store: str) -> None:
    async with garrison.open_node(store=store) as node:  # resumes unfinished workflows
        handle = node.workflow("demo")
        try:
            handle.status()
        except garrison.GarrisonError:
            await node.start_workflow(three_steps, id="demo")
        print(f"[child {os.getpid()}] workflow 'demo' is {handle.status()}", flush=True)
        result = await handle.result()
        print(f"[child {os.getpid()}] result: {result}", flush=True)


def parent() -> None:
    with tempfile.TemporaryDirectory(prefix="garrison-demo-") as folder:
        store = os.path.join(folder, "demo.db")
        cmd = [sys.executable, __file__, "--child", store]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert first.stdout is not None
        for line in first.stdout:  # echo the first child until step 1 is recorded
            print(line, end="", flush=True)
            if "log: step 1 recorded" in line:
                break
        time.sleep(0.5)  # the workflow's durable sleep is committed
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        print(first.stdout.read(), end="", flush=True)  # what it wrote before it died
        print(f"[parent] killed child {first.pid} with SIGKILL (exit {first.returncode})",
              flush=True)
        second = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        print(second.stdout, end="")
    assert "step 1 runs" not in second.stdout, "step 1 ran again"
    print("[parent] the workflow survived kill -9: step 1 ran once, steps 2 and 3 after resume")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                            format=f"[child {os.getpid()}] log: %(message)s")
        logging.getLogger("garrison").setLevel(logging.WARNING)  # the demo's lines only
        logging.getLogger("garrison.workflow.user").setLevel(logging.INFO)
        trio.run(child, sys.argv[2])
    else:
        parent()
