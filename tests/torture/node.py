"""A node of the torture run: ``python node.py STORE SIZE ROUNDS [SYNCHRONOUS]``.

Starts (idempotently) the ring ``r0 .. r<SIZE-1>`` on the store, waits for every
result and prints them as one JSON line. The harness kills it with SIGKILL at random
moments and starts it again, until it prints. (The harness forks it from a process
that imported this module: ``_forks.py`` calls :func:`run_node`.)
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torture_app
import trio

import garrison
from garrison.config import load_config_text
from garrison.persistence import SQLiteStore

CONFIG = """
version: "1.0"
namespace: torture
entries:
  - {name: echo_fn, kind: process.py, source: "torture_app:echo"}
  - name: echo
    kind: process.service
    process: torture:echo_fn
    lifecycle: {auto_start: true}
"""


async def main() -> None:
    path, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    synchronous = sys.argv[4] if len(sys.argv) > 4 else "normal"
    store = SQLiteStore(path, synchronous=synchronous)
    async with garrison.open_node(config=load_config_text(CONFIG), store=store) as node:
        for i in range(size):
            await node.start_workflow(torture_app.ring_member, i, size, rounds, id=f"r{i}")
        print("started", flush=True)
        results = [await node.workflow(f"r{i}").result() for i in range(size)]
    store.close()
    print(json.dumps(results), flush=True)


def run_node() -> None:
    """The node, with the arguments in ``sys.argv``."""
    trio.run(main)


if __name__ == "__main__":
    run_node()
